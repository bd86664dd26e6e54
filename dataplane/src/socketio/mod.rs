//! Socket.IO v5 on top of the engine.
pub mod packet;
