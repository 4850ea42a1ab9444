//! The identity file: where a user's secret Ed25519 seed lives on disk.
//!
//! Format (version 1), one JSON object:
//!
//! ```json
//! {"version":1,"ed25519_seed":"<64 lowercase hex characters>"}
//! ```
//!
//! The file is created with mode 0600 (owner read/write only) because the seed is the
//! user's whole identity: whoever reads it can read their mail and write as them. A new
//! file never replaces an existing one unless asked, so one typo cannot destroy an
//! identity. Owns: the format and the file's permissions. Does not: know about relays.

use serde::{Deserialize, Serialize};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::protocol::Identity;

/// The identity file format version this code reads and writes.
pub const KEYFILE_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    version: u32,
    ed25519_seed: String,
}

/// Why an identity file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{} already exists; pass --force to replace it (the old identity is lost)", .0.display())]
    Exists(PathBuf),
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a whispr identity file: {detail} (create one with `whispr keygen --out FILE`)", path.display())]
    Corrupt { path: PathBuf, detail: String },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError {
    let path = path.to_path_buf();
    move |source| KeyFileError::Io {
        action,
        path,
        source,
    }
}

/// Writes `identity` to `path` with mode 0600. Without `force`, an existing file is an
/// error; with it, the file is replaced atomically (never left half-written).
pub fn save(path: &Path, identity: &Identity, force: bool) -> Result<(), KeyFileError> {
    let mut contents = serde_json::to_string(&KeyFile {
        version: KEYFILE_VERSION,
        ed25519_seed: hex::encode(identity.seed()),
    })
    .map_err(|e| KeyFileError::Corrupt {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    contents.push('\n');
    if !force {
        // create_new is the existence check: no window between checking and creating.
        let mut file = owner_only()
            .create_new(true)
            .open(path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => KeyFileError::Exists(path.to_path_buf()),
                _ => io_error("create", path)(e),
            })?;
        return file
            .write_all(contents.as_bytes())
            .and_then(|_| file.sync_all())
            .map_err(io_error("write", path));
    }
    let tmp = sibling(path, ".tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = owner_only()
        .create_new(true)
        .open(&tmp)
        .map_err(io_error("create", &tmp))?;
    file.write_all(contents.as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(io_error("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io_error("replace", path))
}

/// Reads an identity file.
pub fn load(path: &Path) -> Result<Identity, KeyFileError> {
    let text = std::fs::read_to_string(path).map_err(io_error("read", path))?;
    let corrupt = |detail: String| KeyFileError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let file: KeyFile = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
    if file.version != KEYFILE_VERSION {
        return Err(corrupt(format!(
            "version {} is not supported (expected {KEYFILE_VERSION})",
            file.version
        )));
    }
    let seed: [u8; 32] = hex::decode(&file.ed25519_seed)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| corrupt("ed25519_seed must be 64 hex characters".into()))?;
    Ok(Identity::from_seed(seed))
}

/// `path` with `suffix` appended to its file name (`key.json` -> `key.json.cursor`).
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn owner_only() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "whispr-keyfile-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn save_then_load_gives_the_same_identity() {
        let path = temp_dir().join("id.json");
        let identity = Identity::generate();
        save(&path, &identity, false).expect("save");
        let loaded = load(&path).expect("load");
        assert_eq!(loaded.public_key(), identity.public_key());
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(
            text.starts_with(r#"{"version":1,"ed25519_seed":""#),
            "{text}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn the_file_is_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let path = temp_dir().join("id.json");
        save(&path, &Identity::generate(), false).expect("save");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        save(&path, &Identity::generate(), true).expect("force");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn an_existing_file_is_kept_unless_forced() {
        let path = temp_dir().join("id.json");
        let first = Identity::generate();
        save(&path, &first, false).expect("save");
        let err = save(&path, &Identity::generate(), false).unwrap_err();
        assert!(matches!(err, KeyFileError::Exists(_)), "{err}");
        assert_eq!(load(&path).expect("load").public_key(), first.public_key());
        let second = Identity::generate();
        save(&path, &second, true).expect("force");
        assert_eq!(load(&path).expect("load").public_key(), second.public_key());
    }

    #[test]
    fn corrupt_files_are_refused_with_the_path() {
        let dir = temp_dir();
        let cases = [
            ("garbage", "hello"),
            ("short", r#"{"version":1,"ed25519_seed":"abcd"}"#),
            (
                "version",
                r#"{"version":9,"ed25519_seed":"0101010101010101010101010101010101010101010101010101010101010101"}"#,
            ),
        ];
        for (name, contents) in cases {
            let path = dir.join(name);
            std::fs::write(&path, contents).expect("write");
            let err = load(&path).unwrap_err();
            assert!(matches!(err, KeyFileError::Corrupt { .. }), "{name}: {err}");
            assert!(err.to_string().contains(name), "{err}");
        }
    }
}
