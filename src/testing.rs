//! Internals the integration tests (`tests/it/`), the benchmarks (`benches/`), the vector
//! generator (`examples/`) and the fuzz targets (`fuzz/`) reach, and nothing else: the
//! store and blob conformance suites to run against a real Redis, the stores
//! themselves, the Redis connection, inbox key and pub/sub channel names (to watch what a
//! relay publishes and reach into what it stores), the send-rate buckets (to measure leasing across nodes), and the pure parsers the fuzzers drive.
//!
//! Not API: hidden from the documentation and free to change with the code. A relay's
//! users have [`crate::server`], [`crate::config`], [`crate::client`],
//! [`crate::protocol`] and [`crate::error`]; everything here is `pub(crate)` in its own
//! module and only re-exported for those callers.

/// The message stores and their shared conformance suite.
pub mod store {
    pub use crate::store::{
        conformance, HistoryLoss, InsertOutcome, MemoryStore, MessageStore, RedisOptions,
        RedisStore, SharedStore, StoreError, StoreLimits,
    };
}

/// The attachment stores and their shared conformance suite.
pub mod blobs {
    pub use crate::blobs::{conformance, BlobId, RedisBlobs};
}

/// Where Redis is, and one connection to it.
pub mod redis_link {
    pub use crate::redis_link::{RedisLink, RedisTarget};
}

/// The send-rate buckets, to measure what leasing them from Redis overshoots.
pub mod relay {
    pub use crate::relay::RateLimits;
}

/// The names of an inbox's keys, to inject the faults a test needs into them.
pub mod redis_keys {
    pub use crate::redis_keys::inbox;
}

/// The pub/sub channel of an inbox's wake-ups.
pub mod notify {
    pub use crate::notify::channel;
}

/// The `/signal` wire format and the pub/sub channel of a call room.
pub mod signal {
    pub use crate::signal::{frame, redis::channel, CallId, ClientFrame, ServerFrame};
}

/// The session's pure frame decoding and first state.
pub mod session {
    pub use crate::session::state::{auth_refusal, decode_frame, Frame, Unauthenticated};
}

/// The HTTP routes' query parsers.
pub mod http {
    pub use crate::http::v1::parse_since;
    pub use crate::http::{parse_inbox_query, parse_upload_query, InboxQuery};
}
