//! How `listen` and `inbox` show things: messages on stdout (text or one JSON object
//! per line), everything else as `whispr COMMAND: ...` lines on stderr, so that stdout
//! stays clean for pipes and scripts.

use super::{print_line, CliError};
use crate::client::{seal, Delivery, ListenEvent, Transport};
use crate::protocol::{GapReason, Identity};

/// Decrypts and prints deliveries; reports the other events.
pub(super) struct Printer {
    identity: Identity,
    json: bool,
    command: &'static str,
}

impl Printer {
    pub(super) fn new(identity: &Identity, json: bool, command: &'static str) -> Self {
        Printer {
            identity: Identity::from_seed(identity.seed()),
            json,
            command,
        }
    }

    /// Prints one message. A message that cannot be decrypted is reported on stderr
    /// and counts as processed: retrying would fail the same way forever.
    pub(super) fn message(&self, d: &Delivery) -> Result<(), CliError> {
        let from = d.envelope.sender.to_hex();
        let plaintext = match seal::open(&self.identity, &d.envelope.sender, &d.envelope.body) {
            Ok(p) => p,
            Err(e) => {
                self.note(&format!("message {} from {from} is unreadable: {e}", d.id));
                return Ok(());
            }
        };
        let line = if self.json {
            serde_json::json!({
                "id": d.id.to_hex(),
                "seq": d.seq,
                "epoch": d.epoch,
                "from": from,
                "timestamp": d.envelope.timestamp,
                "text": plaintext.text,
            })
            .to_string()
        } else {
            let text = printable(&plaintext.text);
            format!("[{}] {from}: {text}", utc(d.envelope.timestamp))
        };
        print_line(&line)
    }

    /// Reports a non-message event on stderr.
    pub(super) fn event(&self, event: &ListenEvent) {
        match event {
            ListenEvent::Connected { transport, detail } => {
                let how = match transport {
                    Transport::WebSocket => "WebSocket",
                    Transport::Polling => "HTTP polling",
                };
                match detail {
                    Some(detail) => self.note(detail),
                    None => self.note(&format!("connected ({how})")),
                }
            }
            ListenEvent::Gap { epoch, seq, reason } => {
                let why = match reason {
                    GapReason::Expired => "they expired on the relay before they were read",
                    GapReason::EpochChanged => "the relay lost its stored messages",
                };
                self.note(&format!(
                    "some messages are missing: {why} (continuing at epoch {epoch}, seq {seq})"
                ));
            }
            ListenEvent::Rejected { id, reason } => {
                self.note(&format!("dropped message {id}: {reason}"));
            }
            ListenEvent::Notice(text) => self.note(text),
            ListenEvent::Disconnected { error, retry_in } => self.note(&format!(
                "connection lost ({error}); reconnecting in {:.1} s",
                retry_in.as_secs_f64()
            )),
            ListenEvent::Synced | ListenEvent::Message(_) => {}
        }
    }

    fn note(&self, text: &str) {
        eprintln!("whispr {}: {text}", self.command);
    }
}

/// The text with control characters other than newline and tab escaped (`\u{1b}`), so
/// that a message cannot move the cursor, recolour or retitle the reader's terminal.
/// (JSON output escapes them anyway.)
fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// `YYYY-MM-DD HH:MM:SSZ` for Unix milliseconds (UTC; civil-from-days, H. Hinnant).
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::{printable, utc};

    #[test]
    fn terminal_control_characters_are_escaped() {
        assert_eq!(printable("a\x1b[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(printable("line\n\tnext \u{7}"), "line\n\tnext \\u{7}");
        assert_eq!(printable("ünï 😀"), "ünï 😀");
    }

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc(1_700_000_000_500), "2023-11-14 22:13:20Z");
        assert_eq!(utc(951_825_600_000), "2000-02-29 12:00:00Z");
    }
}
