//! isoflop's wire protocol: the control API (clients) and the worker API (workers), generated
//! from `proto/isoflop/v1` at build time, and [`convert`], every conversion between its
//! messages and isoflop's domain and store types.

pub mod convert;

/// The environment an executor starts a worker with: where the coordinator is, which attempt
/// of which run, and the attempt's bearer token.
pub mod env {
    /// The coordinator's worker API URL.
    pub const COORDINATOR: &str = "ISOFLOP_COORDINATOR";
    /// The run id.
    pub const RUN_ID: &str = "ISOFLOP_RUN_ID";
    /// The attempt number.
    pub const ATTEMPT: &str = "ISOFLOP_ATTEMPT";
    /// The attempt's bearer token.
    pub const TOKEN: &str = "ISOFLOP_RUN_TOKEN";
}

/// Version of the worker protocol; every worker message carries it and a mismatch is refused.
pub const PROTOCOL_VERSION: u32 = 2;

/// Generated messages and services of package `isoflop.v1`.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    tonic::include_proto!("isoflop.v1");
}
