//! Proof of key possession: the WebSocket challenge response and signed HTTP requests.
//!
//! Both bind the relay's origin (the `host[:port]` the client dialled) so that a
//! signature made for one relay cannot be replayed to another, and a timestamp so that
//! it goes stale.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use super::keys::{KeyField, PublicKey, Signature};
use super::{check_timestamp, Identity, ProtocolError};

pub const AUTH_DOMAIN: &[u8] = b"whispr-auth-v1\0";
pub const HTTP_DOMAIN: &[u8] = b"whispr-http-v1\0";

/// Length of the random challenge nonce.
pub const NONCE_LEN: usize = 32;

/// `"whispr-auth-v1\0" || nonce(32) || key(32) || timestamp(u64 BE) || origin (UTF-8)`.
pub fn auth_signing_bytes(
    nonce: &[u8; NONCE_LEN],
    key: &PublicKey,
    timestamp: u64,
    origin: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(AUTH_DOMAIN.len() + 72 + origin.len());
    out.extend_from_slice(AUTH_DOMAIN);
    out.extend_from_slice(nonce);
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(&timestamp.to_be_bytes());
    out.extend_from_slice(origin.as_bytes());
    out
}

/// `"whispr-http-v1\0" || key(32) || timestamp(u64 BE) || origin || 0x00 || method || 0x00 || path_and_query`.
pub fn http_signing_bytes(
    key: &PublicKey,
    timestamp: u64,
    origin: &str,
    method: &str,
    path_and_query: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        HTTP_DOMAIN.len() + 42 + origin.len() + method.len() + path_and_query.len(),
    );
    out.extend_from_slice(HTTP_DOMAIN);
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(&timestamp.to_be_bytes());
    out.extend_from_slice(origin.as_bytes());
    out.push(0);
    out.extend_from_slice(method.as_bytes());
    out.push(0);
    out.extend_from_slice(path_and_query.as_bytes());
    out
}

/// Checks a challenge response: signature first, then the timestamp window.
pub fn verify_auth(
    nonce: &[u8; NONCE_LEN],
    key: &PublicKey,
    timestamp: u64,
    origin: &str,
    signature: &Signature,
    now_ms: u64,
    max_skew_ms: u64,
) -> Result<(), ProtocolError> {
    key.verify(
        &auth_signing_bytes(nonce, key, timestamp, origin),
        signature,
    )?;
    check_timestamp(timestamp, now_ms, max_skew_ms)
}

/// The parsed `Authorization: Whispr key=<hex>, ts=<ms>, sig=<base64>` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpAuth {
    pub key: PublicKey,
    pub timestamp: u64,
    pub signature: Signature,
}

impl HttpAuth {
    /// Signs a request (client side).
    pub fn sign(
        identity: &Identity,
        timestamp: u64,
        origin: &str,
        method: &str,
        path_and_query: &str,
    ) -> Self {
        let key = identity.public_key();
        let signature = identity.sign(&http_signing_bytes(
            &key,
            timestamp,
            origin,
            method,
            path_and_query,
        ));
        HttpAuth {
            key,
            timestamp,
            signature,
        }
    }

    pub fn header_value(&self) -> String {
        format!(
            "Whispr key={}, ts={}, sig={}",
            self.key.to_hex(),
            self.timestamp,
            BASE64.encode(self.signature.as_bytes())
        )
    }

    /// Parses the header value exactly as `PROTOCOL.md` section 8.3 writes it: the
    /// scheme `Whispr` and one space, then `key`, `ts` and `sig` once each, in any
    /// order, as `name=value` separated by commas with optional spaces (only spaces)
    /// around the commas. `key` is lowercase hex, `ts` decimal digits without sign or
    /// leading zeros, `sig` padded standard base64. Anything else is refused, so one
    /// header has one reading and [`HttpAuth::header_value`] writes what this reads.
    pub fn parse(value: &str) -> Result<Self, ProtocolError> {
        let rest = value.strip_prefix("Whispr ").ok_or_else(|| {
            unauthorized("Authorization must use the Whispr scheme: `Whispr key=.., ts=.., sig=..`")
        })?;
        let (mut key, mut ts, mut sig) = (None, None, None);
        let parts: Vec<&str> = rest.split(',').collect();
        let last = parts.len() - 1;
        for (i, part) in parts.into_iter().enumerate() {
            // Spaces are allowed around commas only: not after the scheme's one space,
            // not at the end, and never tabs.
            let part = if i > 0 {
                part.trim_start_matches(' ')
            } else {
                part
            };
            let part = if i < last {
                part.trim_end_matches(' ')
            } else {
                part
            };
            let (name, val) = part
                .split_once('=')
                .ok_or_else(|| unauthorized("Authorization parameters must be name=value"))?;
            let slot = match name {
                "key" => &mut key,
                "ts" => &mut ts,
                "sig" => &mut sig,
                _ => {
                    return Err(unauthorized(
                        "unknown Authorization parameter (expected key, ts, sig)",
                    ))
                }
            };
            if slot.replace(val).is_some() {
                return Err(unauthorized("repeated Authorization parameter"));
            }
        }
        Ok(HttpAuth {
            key: parse_key(key.ok_or_else(|| unauthorized("missing key="))?)?,
            timestamp: parse_ts(ts.ok_or_else(|| unauthorized("missing ts="))?)?,
            signature: parse_sig(sig.ok_or_else(|| unauthorized("missing sig="))?)?,
        })
    }

    pub fn verify(
        &self,
        origin: &str,
        method: &str,
        path_and_query: &str,
        now_ms: u64,
        max_skew_ms: u64,
    ) -> Result<(), ProtocolError> {
        let bytes = http_signing_bytes(&self.key, self.timestamp, origin, method, path_and_query);
        self.key.verify(&bytes, &self.signature)?;
        check_timestamp(self.timestamp, now_ms, max_skew_ms)
    }
}

fn unauthorized(detail: &str) -> ProtocolError {
    ProtocolError::Unauthorized {
        detail: detail.to_string(),
    }
}

/// `key=`: lowercase hex only (a wrong length is `invalid_key`, as everywhere).
fn parse_key(v: &str) -> Result<PublicKey, ProtocolError> {
    if !v.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(unauthorized("key must be lowercase hex"));
    }
    PublicKey::from_hex(v, KeyField::Key)
}

/// `ts=`: decimal digits, no sign, no leading zero (`str::parse` alone takes `+5`).
fn parse_ts(v: &str) -> Result<u64, ProtocolError> {
    let digits = !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
    if !digits || (v.len() > 1 && v.starts_with('0')) {
        return Err(unauthorized(
            "ts must be milliseconds since the Unix epoch, in decimal digits without sign or leading zeros",
        ));
    }
    v.parse()
        .map_err(|_| unauthorized("ts does not fit in 64 bits"))
}

/// `sig=`: padded standard base64 of 64 bytes (the engine refuses anything else).
fn parse_sig(v: &str) -> Result<Signature, ProtocolError> {
    let bytes = BASE64
        .decode(v)
        .map_err(|_| unauthorized("sig must be padded standard base64"))?;
    Signature::from_slice(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> (HttpAuth, String) {
        let auth = HttpAuth::sign(
            &Identity::from_seed([2; 32]),
            1_700_000_005_000,
            "relay.example.com",
            "GET",
            "/v1/inbox",
        );
        let value = auth.header_value();
        (auth, value)
    }

    fn parts(auth: &HttpAuth) -> [String; 3] {
        [
            format!("key={}", auth.key.to_hex()),
            format!("ts={}", auth.timestamp),
            format!("sig={}", BASE64.encode(auth.signature.as_bytes())),
        ]
    }

    #[test]
    fn the_written_form_and_its_permitted_variations_parse() {
        let (auth, value) = header();
        assert_eq!(HttpAuth::parse(&value), Ok(auth.clone()));
        let [k, t, s] = parts(&auth);
        for v in [
            format!("Whispr {s},{k},{t}"),
            format!("Whispr {t} ,  {s}  ,{k}"),
            format!("Whispr {k}, {t}, {s}"),
        ] {
            assert_eq!(HttpAuth::parse(&v), Ok(auth.clone()), "{v}");
        }
        let zero = format!("Whispr {k}, ts=0, {s}");
        assert_eq!(HttpAuth::parse(&zero).map(|a| a.timestamp), Ok(0));
    }

    #[test]
    fn anything_section_8_3_does_not_write_is_refused() {
        let (auth, value) = header();
        let [k, t, s] = parts(&auth);
        let upper_key = format!("key={}", auth.key.to_hex().to_uppercase());
        let mut trailing_bits = s.clone().into_bytes();
        // The last base64 digit before `==` carries 4 unused bits: set one.
        trailing_bits[s.len() - 3] = b'B';
        let trailing_bits = String::from_utf8(trailing_bits).unwrap();
        let unpadded = s.trim_end_matches('=');
        let ts = auth.timestamp;
        for bad in [
            format!("Whispr {k}, ts=+{ts}, {s}"),
            format!("Whispr {k}, ts=-{ts}, {s}"),
            format!("Whispr {k}, ts=0{ts}, {s}"),
            format!("Whispr {k}, ts=18446744073709551616, {s}"),
            format!("Whispr {k}, ts=, {s}"),
            format!("Whispr {upper_key}, {t}, {s}"),
            format!("Whispr {k},\t{t}, {s}"),
            format!("Whispr\t{k}, {t}, {s}"),
            format!("whispr {k}, {t}, {s}"),
            format!("Whispr  {k}, {t}, {s}"),
            format!("Whispr {k}, {t}, {s} "),
            format!("Whispr {k}, {t}, {s},"),
            format!("Whispr {k},, {t}, {s}"),
            format!("Whispr key ={}, {t}, {s}", auth.key.to_hex()),
            format!("Whispr {k}, ts= {ts}, {s}"),
            format!("Whispr {k}, {t}, {unpadded}"),
            format!("Whispr {k}, {t}, {trailing_bits}"),
            format!("Whispr {k}, {t}, sig=-{}", &s[5..]),
            format!("{value}, {t}"),
            format!("Whispr {k}, {t}, {s}, x=1"),
            "Whispr ".to_string(),
        ] {
            assert!(HttpAuth::parse(&bad).is_err(), "accepted: {bad:?}");
        }
        // The length rule keeps its own code.
        let short = format!("Whispr key={}, {t}, {s}", &auth.key.to_hex()[..62]);
        assert!(matches!(
            HttpAuth::parse(&short),
            Err(ProtocolError::InvalidKey { .. })
        ));
    }
}
