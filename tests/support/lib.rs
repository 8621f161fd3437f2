//! What the end-to-end suite and the benchmarks share: the harness that
//! starts the real binaries with a CA made per run ([`harness`]), an
//! orchestrator with enrolled agents on real Podman ([`fleet`]), an HTTPS
//! client ([`http`]), the unprivileged user rootless agents run as
//! ([`rootless`]), three orchestrators on PostgreSQL behind HAProxy
//! ([`replicas`]) and a client of the browser's terminal socket
//! ([`term`]) the runner of the browser cases ([`browser`]) and the egress tests' servers ([`egress`]). The tests are in `it/`, the benchmarks in `benches/`.

pub mod agent;
pub mod browser;
pub mod egress;
pub mod fleet;
pub mod harness;
pub mod http;
pub mod replicas;
pub mod rootless;
pub mod term;
