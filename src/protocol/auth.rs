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
    key.verify_strict(
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

    /// Parses the header value. Parameter order is free; each must appear once.
    pub fn parse(value: &str) -> Result<Self, ProtocolError> {
        let bad = |detail: &str| ProtocolError::Unauthorized {
            detail: detail.to_string(),
        };
        let rest = value.strip_prefix("Whispr ").ok_or_else(|| {
            bad("Authorization must use the Whispr scheme: `Whispr key=.., ts=.., sig=..`")
        })?;
        let (mut key, mut ts, mut sig) = (None, None, None);
        for part in rest.split(',') {
            let (name, val) = part
                .trim()
                .split_once('=')
                .ok_or_else(|| bad("Authorization parameters must be name=value"))?;
            let slot = match name {
                "key" => &mut key,
                "ts" => &mut ts,
                "sig" => &mut sig,
                _ => {
                    return Err(bad(
                        "unknown Authorization parameter (expected key, ts, sig)",
                    ))
                }
            };
            if slot.replace(val.to_string()).is_some() {
                return Err(bad("repeated Authorization parameter"));
            }
        }
        let key = PublicKey::from_hex(&key.ok_or_else(|| bad("missing key="))?, KeyField::Key)?;
        let timestamp = ts
            .ok_or_else(|| bad("missing ts="))?
            .parse()
            .map_err(|_| bad("ts must be milliseconds since the Unix epoch"))?;
        let sig_bytes = BASE64
            .decode(sig.ok_or_else(|| bad("missing sig="))?)
            .map_err(|_| bad("sig must be standard base64"))?;
        Ok(HttpAuth {
            key,
            timestamp,
            signature: Signature::from_slice(&sig_bytes)?,
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
        self.key.verify_strict(&bytes, &self.signature)?;
        check_timestamp(self.timestamp, now_ms, max_skew_ms)
    }
}
