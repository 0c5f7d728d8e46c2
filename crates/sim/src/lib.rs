//! # locksmith-sim
//!
//! The endpoint agent's network side ([`net`]), shared by `locksmith agent` and (next) by the
//! fleet simulator.

pub mod net;
