//! Native attachments: `POST /v1/blobs` (raw bytes for one recipient) and
//! `GET /v1/blobs/{sha256}` (the bytes, streamed, for that recipient only).
//!
//! Both are signed requests (`Authorization: Whispr ...`, as `GET /v1/inbox`). The
//! signature covers the method, path and query, and an upload's query must carry the
//! body's `sha256`, so the signature covers the body too without a new signing format;
//! the relay hashes the body and refuses a mismatch. The uploader is the signing key,
//! the downloader must be the upload's `to`.

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use super::body;
use super::poll::authenticate;
use super::{accept_codec, encoded, AppState};
use crate::blobs::{Blob, BlobId, BlobMeta, BlobOrigin, InflightPermit, PutOutcome};
use crate::error::ApiError;
use crate::protocol::{ErrorCode, KeyField, PublicKey};

/// Downloads are written in slices of this size, each a view of the stored `Bytes`.
const CHUNK_BYTES: usize = 64 * 1024;

#[derive(Serialize)]
struct UploadAnswer {
    sha256: String,
    size: u64,
    expires_at_ms: u64,
    /// The same key had uploaded these bytes for this recipient before; nothing changed.
    duplicate: bool,
}

/// The query of `POST /v1/blobs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadQuery {
    pub to: PublicKey,
    pub sha256: BlobId,
    pub name: String,
}

/// Parses the query of `POST /v1/blobs` (PROTOCOL.md 8.7); pure, so it is fuzzed.
pub fn parse_upload_query(query: Option<&str>) -> Result<UploadQuery, ApiError> {
    let (mut to, mut sha256, mut name) = (None, None, String::new());
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "to" => to = Some(PublicKey::from_hex(&v, KeyField::Recipient)?),
            "sha256" => {
                sha256 = Some(BlobId::from_hex(&v).ok_or_else(|| {
                    ApiError::new(ErrorCode::Malformed, "sha256 must be 64 hex characters")
                })?)
            }
            "name" => name = v.into_owned(),
            _ => {}
        }
    }
    let missing = |what: &str| {
        ApiError::new(
            ErrorCode::Malformed,
            format!("missing query parameter `{what}`"),
        )
    };
    Ok(UploadQuery {
        to: to.ok_or_else(|| missing("to"))?,
        sha256: sha256.ok_or_else(|| missing("sha256"))?,
        name,
    })
}

pub async fn upload(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let ip = super::client_ip(peer.ip(), &headers, &app.config.trusted_proxies);
    let from = authenticate(&app, ip, &headers, &method, &uri)?;
    let q = parse_upload_query(uri.query())?;
    app.relay.check_rate(&from, ip).await?;
    let limit = app.config.attachment_max_size_bytes;
    let deadline = Duration::from_secs(app.config.attachment_upload_timeout_seconds);
    // The body, and a working copy on its way to the store (the Redis command buffer).
    let refused = |r: &body::BodyRefusal| app.relay.metrics().body_refused("blobs", r.label());
    let size = body::declared_size(&headers, limit).inspect_err(refused)?;
    let _held = app.blobs.reserve(size.saturating_mul(2))?;
    let data = body::read_limited(
        &headers,
        body,
        limit,
        deadline,
        "attachment_upload_timeout_seconds",
    )
    .await
    .inspect_err(refused)?;
    if BlobId::of(&data) != q.sha256 {
        return Err(ApiError::new(
            ErrorCode::Malformed,
            "the body's SHA-256 is not the signed `sha256`",
        ));
    }
    let now_ms = app.relay.clock().now_ms();
    let blob = Blob {
        meta: BlobMeta {
            sha256: q.sha256.to_hex(),
            name: q.name,
            size: data.len() as u64,
            from: from.to_hex(),
            to: q.to.to_hex(),
            enc_pub: String::new(),
            created_ms: now_ms,
            expires_ms: now_ms.saturating_add(app.config.attachment_ttl_ms()),
            origin: BlobOrigin::Native,
        },
        data,
    };
    let outcome = app.blobs.store().put(blob, now_ms).await?;
    let (status, duplicate) = match outcome {
        PutOutcome::Stored(_) => (StatusCode::CREATED, false),
        PutOutcome::Existing(_) => (StatusCode::OK, true),
    };
    let meta = outcome.meta();
    let answer = UploadAnswer {
        sha256: meta.sha256.clone(),
        size: meta.size,
        expires_at_ms: meta.expires_ms,
        duplicate,
    };
    encoded(accept_codec(&headers), status, &answer)
}

pub async fn download(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(sha256): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let ip = super::client_ip(peer.ip(), &headers, &app.config.trusted_proxies);
    app.relay.check_ip_rate(ip).await?;
    let reader = authenticate(&app, ip, &headers, &method, &uri)?;
    let id = BlobId::from_hex(&sha256)
        .ok_or_else(|| ApiError::new(ErrorCode::Malformed, "sha256 must be 64 hex characters"))?;
    let blob = app
        .blobs
        .store()
        .get(&id, app.relay.clock().now_ms())
        .await?
        // A v1 blob is not served here: its `to` proved nothing when it was stored.
        .filter(|b| b.meta.origin == BlobOrigin::Native)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such attachment, or it expired"))?;
    if blob.meta.to != reader.to_hex() {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "this attachment is for another key",
        ));
    }
    let held = app.blobs.reserve(blob.data.len() as u64)?;
    let mut resp = raw(blob.data, held);
    for (name, value) in [
        ("x-whispr-from", blob.meta.from),
        ("x-whispr-expires-at-ms", blob.meta.expires_ms.to_string()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert(name, v);
        }
    }
    Ok(resp)
}

/// The bytes as `application/octet-stream`, streamed (see [`stream`]).
pub(super) fn raw(data: Bytes, held: InflightPermit) -> Response {
    stream(data, "application/octet-stream", held)
}

/// `data` as the body, streamed in slices of it (no copy), with its length declared up
/// front; `held` (the in-flight reservation for these bytes) is given back when the
/// body is dropped: sent, or abandoned by the client.
pub(super) fn stream(data: Bytes, content_type: &'static str, held: InflightPermit) -> Response {
    let len = data.len();
    let chunks = (0..len).step_by(CHUNK_BYTES).map(move |start| {
        let _held = &held;
        Ok::<_, Infallible>(data.slice(start..(start + CHUNK_BYTES).min(len)))
    });
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CONTENT_LENGTH, HeaderValue::from(len)),
        ],
        Body::from_stream(futures::stream::iter(chunks)),
    )
        .into_response()
}
