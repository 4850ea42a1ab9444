//! `whispr send`: seal a text to a recipient, sign it, and hand it to the relay.
//!
//! Success means stored: `POST /v1/send` answers 200 only after the relay's store has
//! the message, so exit status 0 is a promise that the recipient will get it (unless it
//! expires unread).

use std::io::Read;
use std::path::PathBuf;

use super::{print_line, CliError, RelayOptions};
use crate::client::{keyfile, seal, HttpClient};
use crate::clock::Clock;
use crate::protocol::{Codec, Envelope};

/// Flags of `whispr send`.
#[derive(Clone, Debug)]
pub struct SendOptions {
    pub relay: RelayOptions,
    /// The sender's identity file.
    pub key: PathBuf,
    /// The recipient's public key, 64 hex characters.
    pub to: String,
    /// The message; read from standard input when absent.
    pub text: Option<String>,
}

/// Sends one message; prints its id (hex) once the relay has stored it.
pub async fn send(options: &SendOptions) -> Result<(), CliError> {
    let identity = keyfile::load(&options.key)?;
    let recipient = seal::parse_recipient(&options.to).map_err(|e| {
        CliError::usage(format!(
            "--to: {e}; pass the 64 hex characters `whispr keygen` printed"
        ))
    })?;
    let text = match &options.text {
        Some(text) => text.clone(),
        None => read_stdin()?,
    };
    if text.is_empty() {
        return Err(CliError::usage(
            "nothing to send: give the text as an argument or on standard input",
        ));
    }
    let body = seal::seal_text(&identity, &recipient, &text)?;
    let envelope = Envelope::seal(&identity, recipient, Clock::system().now_ms(), false, body);
    let server = &options.relay.server;
    let http = HttpClient::with_tls(server, Codec::Json, &options.relay.tls()?)
        .map_err(|e| CliError::from_client(e, "sending", server))?;
    let accepted = http
        .send(&envelope)
        .await
        .map_err(|e| CliError::from_client(e, "sending", server))?;
    print_line(&accepted.id.to_hex())
}

/// The whole of standard input, minus one trailing line break (what `echo` adds).
fn read_stdin() -> Result<String, CliError> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text).map_err(|e| {
        CliError::usage(format!("cannot read the message from standard input: {e}"))
    })?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}
