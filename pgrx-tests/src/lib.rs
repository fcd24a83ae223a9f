//! Shared by the end-to-end suites and the benchmark.
pub mod server;
pub mod tls_server;
