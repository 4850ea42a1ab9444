//! The attachment keys: the stores' limits from the config, and their checks at load.

use super::BlobLimits;
use crate::config::{require, Config, Invalid};

/// The largest `attachment_max_size_bytes`: Redis refuses larger values.
const MAX_ATTACHMENT_BYTES: usize = 512 << 20;

/// The longest `attachment_ttl_seconds`: 30 days. Attachments are for handing a file
/// over, not for keeping it; the bound also keeps every expiry far from overflowing.
const MAX_ATTACHMENT_TTL_SECONDS: u64 = 30 * 24 * 3600;

/// The largest `max_attachment_inflight_bytes` (its KiB count must fit a semaphore
/// reservation).
const MAX_ATTACHMENT_INFLIGHT_BYTES: usize = 1 << 40;

impl BlobLimits {
    pub fn from_config(c: &Config) -> Self {
        BlobLimits {
            max_blob_bytes: c.attachment_max_size_bytes,
            ttl_ms: c.attachment_ttl_ms(),
            max_store_bytes: c.max_attachment_store_bytes,
            max_sender_bytes: c.max_attachment_bytes_per_sender,
        }
    }
}

pub(crate) fn validate(c: &Config) -> Result<(), Invalid> {
    require(
        (1..=MAX_ATTACHMENT_BYTES).contains(&c.attachment_max_size_bytes),
        "attachment_max_size_bytes",
        "must be between 1 and 536870912 (512 MiB, Redis's largest value)",
    )?;
    require(
        (1..=MAX_ATTACHMENT_TTL_SECONDS).contains(&c.attachment_ttl_seconds),
        "attachment_ttl_seconds",
        "must be between 1 and 2592000 (30 days)",
    )?;
    require(
        (1..=3600).contains(&c.attachment_upload_timeout_seconds),
        "attachment_upload_timeout_seconds",
        "must be between 1 and 3600",
    )?;
    for (key, budget) in [
        ("max_attachment_store_bytes", c.max_attachment_store_bytes),
        (
            "max_attachment_bytes_per_sender",
            c.max_attachment_bytes_per_sender,
        ),
    ] {
        require(
            budget >= c.attachment_max_size_bytes,
            key,
            "must hold at least one attachment of attachment_max_size_bytes",
        )?;
    }
    require(
        (c.max_upload_body_bytes()..=MAX_ATTACHMENT_INFLIGHT_BYTES)
            .contains(&c.max_attachment_inflight_bytes),
        "max_attachment_inflight_bytes",
        "must be at least one largest upload body (attachment_max_size_bytes in base64 plus 16 KiB) and at most 1 TiB",
    )
}
