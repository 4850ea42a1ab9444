//! `whispr keygen`: a new identity in a private file; its public key on stdout.

use std::path::PathBuf;

use super::{print_line, CliError};
use crate::client::keyfile;
use crate::protocol::Identity;

/// Flags of `whispr keygen`.
#[derive(Clone, Debug)]
pub struct KeygenOptions {
    /// Where to write the identity file (mode 0600).
    pub out: PathBuf,
    /// Replace an existing file (its identity is lost).
    pub force: bool,
}

/// Creates the identity file and prints the public key (64 hex characters), the
/// address others send to.
pub fn keygen(options: &KeygenOptions) -> Result<(), CliError> {
    let identity = Identity::generate();
    keyfile::save(&options.out, &identity, options.force)?;
    print_line(&identity.public_key().to_hex())
}
