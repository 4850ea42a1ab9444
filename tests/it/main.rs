//! Integration tests over real sockets on 127.0.0.1. One binary; see `support`.

mod delivery;
mod inputs;
mod model;
mod ops;
mod poll;
mod sessions;
mod support;
mod tls;
mod vectors;
