//! `GET /inbox/{key}?since=`: the v1 poll. It answers the queued v1 messages of `key`
//! with a sender timestamp above `since`, sorted by timestamp, and acknowledges exactly
//! those (see `reader`): a message a poll returned never comes back, not even to a
//! restarted client polling from 0, while one skipped by `since` stays queued.

use axum::extract::{Path, RawQuery, State};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};

use super::error::V1Error;
use super::{parse_key, V1State};
use crate::metrics::DeliveryTransport;
use crate::protocol::whispr_v1::StoredV1;

/// A message as v1 readers see it. Sockets add `to`.
#[derive(Serialize)]
pub struct V1Message<'a> {
    pub from: &'a str,
    pub enc_pub: &'a str,
    pub message: &'a str,
    pub signature: &'a str,
    pub timestamp: f64,
    pub id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<&'a str>,
}

impl<'a> V1Message<'a> {
    pub fn new(m: &'a StoredV1, with_to: bool) -> Self {
        V1Message {
            from: &m.from,
            enc_pub: &m.enc_pub,
            message: &m.message,
            signature: &m.signature,
            timestamp: m.timestamp,
            id: &m.id,
            to: with_to.then_some(m.to.as_str()),
        }
    }
}

/// `since` as FastAPI parsed it: a float, 0 when absent; `None` when it is not a
/// number (v1 answers 422). Pure, so it is fuzzed.
pub fn parse_since(query: Option<&str>) -> Option<f64> {
    let mut since = 0.0;
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if name == "since" {
            since = value.parse::<f64>().ok().filter(|s| !s.is_nan())?;
        }
    }
    Some(since)
}

pub async fn inbox(
    State(v1): State<V1State>,
    Path(key): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, V1Error> {
    let to = parse_key(&key)?;
    let since = parse_since(query.as_deref())
        .ok_or_else(|| V1Error::Unprocessable("since must be a number".into()))?;
    let relay = &v1.app.relay;
    let limit = v1.app.config.max_messages_per_recipient;
    let mut pending = v1.readers.open(relay, &to, limit).await?;
    let mut out: Vec<(u64, StoredV1)> = pending
        .unhandled()
        .into_iter()
        .filter(|(_, m)| m.timestamp > since)
        .collect();
    for (seq, _) in &out {
        pending.mark(*seq);
    }
    pending.finish().await?;
    relay
        .metrics()
        .delivered_over(DeliveryTransport::V1Poll, out.len());
    out.sort_by(|a, b| a.1.timestamp.total_cmp(&b.1.timestamp).then(a.0.cmp(&b.0)));
    let messages: Vec<V1Message> = out.iter().map(|(_, m)| V1Message::new(m, false)).collect();
    Ok(Json(json!({ "messages": messages })))
}
