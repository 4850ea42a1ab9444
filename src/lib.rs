pub mod clock;
pub mod protocol;
pub mod store;
