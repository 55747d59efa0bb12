//! isoflop's wire protocol: the control API (clients) and the worker API (workers), generated
//! from `proto/isoflop/v1` at build time.

#![allow(missing_docs, clippy::all)]

/// Version of the worker protocol; every worker message carries it and a mismatch is refused.
pub const PROTOCOL_VERSION: u32 = 1;

/// Generated messages and services of package `isoflop.v1`.
pub mod v1 {
    tonic::include_proto!("isoflop.v1");
}
