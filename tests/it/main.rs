//! Integration tests over real sockets on 127.0.0.1. One binary; see `support`.

mod attachments;
mod bad_signatures;
mod bench;
mod cli;
mod cli_transports;
mod cluster;
mod delivery;
mod docs;
mod http_limits;
mod inputs;
mod listener;
mod logs;
mod model;
mod nginx;
mod ops;
mod poll;
mod redis_cluster;
mod redis_faults;
mod redis_integrity;
mod redis_store;
mod regions;
mod sessions;
mod signal;
mod sockets;
mod support;
mod tls;
mod v1;
mod v1_script;
mod vectors;
// The vector-file loader, shared with the protocol crate's vector tests.
#[path = "../../proto/tests/support/vector_checks.rs"]
mod vector_checks;
#[path = "../../proto/tests/support/vector_files.rs"]
mod vector_files;
