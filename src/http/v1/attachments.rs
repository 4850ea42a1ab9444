//! Whispr v1 attachments: `POST /upload`, `GET /download/{att_id}` (JSON, base64) and
//! `GET /download/raw/{att_id}` (the bytes, streamed), each download for the upload's
//! `to` only (`?recipient=`).
//!
//! An upload is checked in the order that refuses cheaply first: the client IP's rate
//! limit, shared with `/send` (429), the body's length (413 before it is read past
//! `max_upload_body_bytes`), room in `max_attachment_inflight_bytes` for it (503), its
//! shape (422), the digest's form (400), the declared and then the decoded size (413),
//! the digest of the decoded bytes (400), the strict Ed25519 signature by `from_` over
//! them (400), and the sender's rate limit (429). Only then is it stored. A download
//! takes a token from the IP's bucket and holds in-flight room for what it answers.
//! v1 proves no key ownership on download either: whoever knows the recipient's public
//! key and the attachment id can fetch the ciphertext, as with the original server.

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;

use super::error::V1Error;
use super::{parse_key, V1State};
use crate::blobs::{Blob, BlobId, BlobMeta, BlobOrigin};
use crate::error::{RelayError, BLOB_BUSY_RETRY_MS};
use crate::http::blobs::{raw, stream};
use crate::http::body;
use crate::protocol::{ErrorCode, KeyField, PublicKey, Signature};

/// The body of `POST /upload`, field for field.
#[derive(Deserialize)]
struct UploadV1 {
    to: String,
    from_: String,
    enc_pub: String,
    blob: String,
    signature: String,
    name: String,
    size: u64,
    sha256: String,
}

/// The bytes of a checked upload and who they are from.
struct Checked {
    id: BlobId,
    data: Vec<u8>,
    from: PublicKey,
    to: PublicKey,
}

impl UploadV1 {
    /// Everything but the rate limit and the store; pure.
    fn check(&self, max: usize) -> Result<Checked, V1Error> {
        let to = parse_key(&self.to)?;
        let id = BlobId::from_hex(&self.sha256).ok_or_else(|| {
            V1Error::status(ErrorCode::Malformed, "sha256 must be 64 hex characters")
        })?;
        let too_large = |size: u64| {
            V1Error::status(
                ErrorCode::TooLarge,
                format!("Attachment of {size} bytes is over the limit of {max} bytes"),
            )
        };
        if self.size > max as u64 {
            return Err(too_large(self.size));
        }
        let data = STANDARD
            .decode(&self.blob)
            .map_err(|_| V1Error::status(ErrorCode::Malformed, "blob is not valid base64"))?;
        if data.len() > max {
            return Err(too_large(data.len() as u64));
        }
        if BlobId::of(&data) != id {
            return Err(V1Error::status(
                ErrorCode::Malformed,
                "sha256 does not match the blob",
            ));
        }
        let from = PublicKey::from_hex(&self.from_, KeyField::Sender)
            .map_err(|_| V1Error::InvalidSignature)?;
        let signature = STANDARD
            .decode(&self.signature)
            .ok()
            .and_then(|s| Signature::from_slice(&s).ok())
            .ok_or(V1Error::InvalidSignature)?;
        from.verify(&data, &signature)
            .map_err(|_| V1Error::InvalidSignature)?;
        Ok(Checked { id, data, from, to })
    }
}

/// The answer to a v1 attachment request; a 503 (the relay busy with other attachments,
/// shutting down, the store failing) says when to retry, as native answers do.
fn answer(result: Result<Response, V1Error>) -> Response {
    let mut resp = result.unwrap_or_else(IntoResponse::into_response);
    if resp.status() == StatusCode::SERVICE_UNAVAILABLE {
        let secs = BLOB_BUSY_RETRY_MS.div_ceil(1000);
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

/// `POST /upload`'s answer while the relay drains: 503 with `Retry-After`.
pub(super) fn draining_refusal() -> Response {
    answer(Err(RelayError::ShuttingDown.into()))
}

pub async fn upload(
    State(v1): State<V1State>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(store_upload(&v1, peer, &headers, body).await)
}

/// `POST /upload`: the client IP's token and an in-flight reservation before the body
/// is read, the checks, the sender's token, the store.
async fn store_upload(
    v1: &V1State,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, V1Error> {
    let app = &v1.app;
    let ip = crate::http::client_ip(peer.ip(), headers, &app.config.trusted_proxies);
    app.relay.check_ip_rate(ip).await?;
    let limit = app.config.max_upload_body_bytes();
    let deadline = Duration::from_secs(app.config.attachment_upload_timeout_seconds);
    // At most twice the body is held at once: the body and its parsed copy, then the
    // parsed base64 and the decoded bytes.
    let refused = |r: &body::BodyRefusal| app.relay.metrics().body_refused("v1_upload", r.label());
    let size = body::declared_size(headers, limit).inspect_err(refused)?;
    let _held = app.blobs.reserve(size.saturating_mul(2))?;
    let bytes = body::read_limited(
        headers,
        body,
        limit,
        deadline,
        "attachment_upload_timeout_seconds",
    )
    .await
    .inspect_err(refused)?;
    let upload: UploadV1 = serde_json::from_slice(&bytes)
        .map_err(|e| V1Error::Unprocessable(format!("invalid request body: {e}")))?;
    drop(bytes);
    let checked = upload.check(app.config.attachment_max_size_bytes)?;
    app.relay.check_sender_rate(&checked.from).await?;
    let now_ms = app.relay.clock().now_ms();
    let blob = Blob {
        meta: BlobMeta {
            sha256: checked.id.to_hex(),
            name: upload.name,
            size: upload.size,
            from: checked.from.to_hex(),
            to: checked.to.to_hex(),
            enc_pub: upload.enc_pub,
            created_ms: now_ms,
            expires_ms: now_ms.saturating_add(app.config.attachment_ttl_ms()),
            origin: BlobOrigin::V1,
        },
        data: checked.data.into(),
    };
    app.blobs.store().put(blob, now_ms).await?;
    Ok(Json(json!({ "att_id": checked.id.to_hex(), "status": "ok" })).into_response())
}

/// The stored v1 blob `att_id`, if `?recipient=` is its `to`.
///
/// A missing or malformed `recipient` is 422 (FastAPI's query validation); an `att_id`
/// that is not 64 hex names no attachment and is 404, as is a blob the native API stored
/// (the native API promises its blobs only to a signed download by their `to`).
///
/// Every download takes a token from the client IP's bucket first (the one sends use).
async fn find(
    v1: &V1State,
    peer: SocketAddr,
    headers: &HeaderMap,
    att_id: &str,
    uri: &Uri,
) -> Result<Blob, V1Error> {
    let app = &v1.app;
    let ip = crate::http::client_ip(peer.ip(), headers, &app.config.trusted_proxies);
    app.relay.check_ip_rate(ip).await?;
    let recipient = url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "recipient")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| V1Error::Unprocessable("missing query parameter `recipient`".into()))?;
    let recipient = parse_key(&recipient)?;
    let not_found = || V1Error::status(ErrorCode::NotFound, "Attachment not found");
    let id = BlobId::from_hex(att_id).ok_or_else(not_found)?;
    let blob = app
        .blobs
        .store()
        .get(&id, app.relay.clock().now_ms())
        .await?
        .filter(|b| b.meta.origin == BlobOrigin::V1)
        .ok_or_else(not_found)?;
    if blob.meta.to != recipient.to_hex() {
        return Err(V1Error::status(
            ErrorCode::Forbidden,
            "Not authorized to download this attachment",
        ));
    }
    Ok(blob)
}

/// The `GET /download/{att_id}` answer (members in the order the relay always sent).
#[derive(Serialize)]
struct DownloadV1<'a> {
    att_id: &'a str,
    blob: String,
    from: &'a str,
    name: &'a str,
    size: u64,
    to: &'a str,
}

pub async fn download(
    State(v1): State<V1State>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(att_id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    answer(download_json(&v1, peer, &headers, &att_id, &uri).await)
}

async fn download_json(
    v1: &V1State,
    peer: SocketAddr,
    headers: &HeaderMap,
    att_id: &str,
    uri: &Uri,
) -> Result<Response, V1Error> {
    let blob = find(v1, peer, headers, att_id, uri).await?;
    // The blob, its base64 and the JSON around it are held at once.
    let len = blob.data.len() as u64;
    let held = v1
        .app
        .blobs
        .reserve(len.saturating_add(len.div_ceil(3).saturating_mul(8)))?;
    let m = &blob.meta;
    let body = serde_json::to_vec(&DownloadV1 {
        att_id: &m.sha256,
        blob: STANDARD.encode(&blob.data),
        from: &m.from,
        name: &m.name,
        size: m.size,
        to: &m.to,
    })
    .map_err(|e| V1Error::status(ErrorCode::Internal, format!("encoding the answer: {e}")))?;
    Ok(stream(body.into(), "application/json", held))
}

pub async fn download_raw(
    State(v1): State<V1State>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(att_id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let blob = find(&v1, peer, &headers, &att_id, &uri).await?;
        let held = v1.app.blobs.reserve(blob.data.len() as u64)?;
        Ok(raw(blob.data, held))
    };
    answer(result.await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Identity;

    fn upload(from: &Identity, data: &[u8]) -> UploadV1 {
        UploadV1 {
            to: "ab".repeat(32),
            from_: from.public_key().to_hex(),
            enc_pub: "cd".repeat(32),
            blob: STANDARD.encode(data),
            signature: STANDARD.encode(from.sign(data).to_bytes()),
            name: "f.bin".into(),
            size: data.len() as u64,
            sha256: BlobId::of(data).to_hex(),
        }
    }

    fn status(r: Result<Checked, V1Error>) -> u16 {
        match r {
            Ok(_) => 200,
            Err(e) => e.into_response().status().as_u16(),
        }
    }

    #[test]
    fn each_refusal_has_its_status() {
        let alice = Identity::generate();
        assert_eq!(status(upload(&alice, b"hello").check(10)), 200);
        let mut u = upload(&alice, b"hello");
        u.signature = STANDARD.encode(alice.sign(b"other").to_bytes());
        assert_eq!(status(u.check(10)), 400, "bad signature");
        let mut u = upload(&alice, b"hello");
        u.blob = "%%%".into();
        assert_eq!(status(u.check(10)), 400, "bad base64");
        let mut u = upload(&alice, b"hello");
        u.sha256 = "12".into();
        assert_eq!(status(u.check(10)), 400, "short sha256");
        let mut u = upload(&alice, b"hello");
        u.sha256 = BlobId::of(b"other").to_hex();
        assert_eq!(status(u.check(10)), 400, "sha256 mismatch");
        let mut u = upload(&alice, b"hello");
        u.size = 11;
        assert_eq!(status(u.check(10)), 413, "declared size");
        assert_eq!(status(upload(&alice, &[1; 11]).check(10)), 413, "real size");
        let mut u = upload(&alice, b"hello");
        u.from_ = "00".repeat(32);
        assert_eq!(status(u.check(10)), 400, "a small-order key");
        let mut u = upload(&alice, b"hello");
        u.to = "xyz".into();
        assert_eq!(status(u.check(10)), 422, "malformed to");
    }
}
