//! One WebSocket client: a pure state machine (`state`) and the socket loop that
//! drives it (`socket`) over the shared socket layer ([`crate::ws`]).

mod conn;
pub(crate) mod limits;
mod socket;
pub mod state;

pub use socket::{run, SessionContext, SessionSettings};
