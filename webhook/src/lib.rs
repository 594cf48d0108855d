//! wi-webhook: Azure Workload Identity for Azure DevOps agent pods, with pool isolation.
//!
//! Decision logic (`mutation`, `policy`, `admission`) is plain functions over JSON; `api`
//! is the HTTP layer (axum over rustls) and `cli` the commands of the binary.

/// The crate version and the commit it was built from (build.rs), for `--version`.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("WI_GIT_COMMIT"), ")");

pub mod admission;
pub mod api;
pub mod audit;
pub mod cli;
pub mod config;
pub mod denial;
pub mod doctor;
pub mod federation;
pub mod guid;
pub mod inputs;
pub mod keys;
pub mod layout;
pub mod logging;
pub mod metrics;
pub mod mutation;
pub mod offline;
pub mod pod;
pub mod policy;
pub mod scoping;
pub mod serviceaccounts;
pub mod webhookconfig;
pub mod workloads;
pub mod yaml;
