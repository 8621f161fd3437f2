//! Integration tests: `orchestrator::serve` in-process on 127.0.0.1:0, spoken
//! to with raw HTTP/1.1 and a WebSocket client, as an admin and an agent would.
//! The container tests play the agent with a scripted fake (`fake`); the
//! real-Podman end-to-end suite lives in the top-level `tests/`.

mod fake;
mod fake_browser;
mod fake_terminal;
mod harness;
mod people;

mod acknowledged;
mod admission;
mod agent;
mod api;
mod audit;
mod authz;
mod bodies;
mod connections;
mod containers;
mod durability;
mod failures;
mod history;
mod identity;
mod ops;
mod policies;
mod postgres;
mod reconcile;
mod replica_faults;
mod replicas;
mod restart;
mod routing;
mod routing_faults;
mod routing_moves;
mod scheduling;
mod store_contract;
mod terminals;
mod terminals_away;
mod terminals_replicas;
mod terminals_resume;
mod workers;
