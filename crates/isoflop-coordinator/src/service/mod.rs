//! gRPC services of the coordinator.

pub mod control;
pub mod worker;
