//! The HTTP fallback from the client side: send an envelope, poll an inbox.

use serde::Deserialize;

use super::{origin_of, parse_base, ClientError, Tls};
use crate::clock::Clock;
use crate::protocol::{
    Codec, Cursor, Envelope, ErrorCode, GapReason, HttpAuth, Identity, MessageId, WireEnvelope,
};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SendResult {
    pub id: MessageId,
    pub duplicate: bool,
    #[serde(default)]
    pub online: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PolledMessage {
    pub seq: u64,
    pub id: MessageId,
    pub envelope: Envelope,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct InboxPage {
    pub epoch: u64,
    pub gap: bool,
    #[serde(default)]
    pub gap_reason: Option<GapReason>,
    pub messages: Vec<PolledMessage>,
    pub next: Cursor,
    pub more: bool,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorCode,
    detail: String,
}

pub struct HttpClient {
    base: url::Url,
    origin: String,
    http: reqwest::Client,
    codec: Codec,
}

impl HttpClient {
    /// A client for the relay at `base` (http(s) or ws(s); web PKI trust for https).
    pub fn new(base: &str, codec: Codec) -> Result<Self, ClientError> {
        Self::build(base, codec, reqwest::Client::new())
    }

    /// A client trusting what `tls` trusts (for example a self-signed relay), with
    /// connect and request timeouts so that a command never hangs on a dead relay.
    pub fn with_tls(base: &str, codec: Codec, tls: &Tls) -> Result<Self, ClientError> {
        Self::build(base, codec, tls.http_client()?)
    }

    fn build(base: &str, codec: Codec, http: reqwest::Client) -> Result<Self, ClientError> {
        let mut base = parse_base(base)?;
        let scheme = if matches!(base.scheme(), "https" | "wss") {
            "https"
        } else {
            "http"
        };
        let _ = base.set_scheme(scheme);
        let origin = origin_of(&base)?;
        Ok(HttpClient {
            base,
            origin,
            http,
            codec,
        })
    }

    fn url(&self, path_and_query: &str) -> String {
        let mut s = self.base.as_str().trim_end_matches('/').to_string();
        s.push_str(path_and_query);
        s
    }

    async fn decode<T: serde::de::DeserializeOwned>(
        &self,
        resp: reqwest::Response,
    ) -> Result<T, ClientError> {
        let status = resp.status();
        let codec = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(Codec::from_content_type)
            .unwrap_or(Codec::Json);
        let bytes = resp.bytes().await.map_err(transport_error)?;
        if !status.is_success() {
            // Not the relay's `{error, detail}`: a proxy's page (nginx's 502 or 504 when
            // the relay is down behind it). Its HTML is no use on a terminal.
            let body: ErrorBody =
                Codec::Json
                    .decode(&bytes)
                    .map_err(|_| ClientError::NotTheRelay {
                        url: self.url(""),
                        status: status.to_string(),
                    })?;
            return Err(ClientError::Refused {
                code: body.error,
                detail: body.detail,
                status: Some(status.as_u16()),
            });
        }
        Ok(codec.decode(&bytes)?)
    }

    /// `POST /v1/send`; `Ok` only once the relay has stored (or pushed) the envelope.
    pub async fn send(&self, envelope: &Envelope) -> Result<SendResult, ClientError> {
        let body = self
            .codec
            .encode(&WireEnvelope::from(envelope))?
            .into_bytes();
        let resp = self
            .http
            .post(self.url("/v1/send"))
            .header(reqwest::header::CONTENT_TYPE, self.codec.content_type())
            .body(body)
            .send()
            .await
            .map_err(transport_error)?;
        self.decode(resp).await
    }

    /// `GET /v1/info`: the relay's versions and published limits.
    pub async fn info(&self) -> Result<serde_json::Value, ClientError> {
        let resp = self
            .http
            .get(self.url("/v1/info"))
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(transport_error)?;
        self.decode(resp).await
    }

    /// `GET /v1/inbox` after `cursor` (acknowledging through it).
    pub async fn poll(
        &self,
        identity: &Identity,
        cursor: Option<Cursor>,
        limit: Option<usize>,
    ) -> Result<InboxPage, ClientError> {
        let mut pq = String::from("/v1/inbox");
        let mut params = Vec::new();
        if let Some(c) = cursor {
            params.push(format!("epoch={}", c.epoch));
            params.push(format!("since={}", c.seq));
        }
        if let Some(l) = limit {
            params.push(format!("limit={l}"));
        }
        if !params.is_empty() {
            pq.push('?');
            pq.push_str(&params.join("&"));
        }
        let auth = HttpAuth::sign(identity, Clock::system().now_ms(), &self.origin, "GET", &pq);
        let resp = self
            .http
            .get(self.url(&pq))
            .header(reqwest::header::AUTHORIZATION, auth.header_value())
            .header(reqwest::header::ACCEPT, self.codec.content_type())
            .send()
            .await
            .map_err(transport_error)?;
        self.decode(resp).await
    }
}

/// A request that got no HTTP answer. reqwest's own message names only the URL; the
/// useful part ("Connection refused", a certificate problem) is the innermost cause.
fn transport_error(e: reqwest::Error) -> ClientError {
    let mut innermost: &dyn std::error::Error = &e;
    while let Some(cause) = innermost.source() {
        innermost = cause;
    }
    ClientError::Connect(innermost.to_string())
}
