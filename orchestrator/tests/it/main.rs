//! Integration tests: `orchestrator::serve` in-process on 127.0.0.1:0, spoken
//! to with raw HTTP/1.1 and a WebSocket client, as an admin and an agent would.

mod harness;

mod agent;
mod api;
mod restart;
