//! One WebSocket client: a pure state machine (`state`) and the socket loop that
//! drives it (`socket`).

mod conn;
mod socket;
pub mod state;

pub use socket::{run, SessionSettings};

/// Sleeps until `deadline`, or forever without one: a `select!` branch for an
/// optional pong deadline (every socket loop that pings uses it).
pub(crate) async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
