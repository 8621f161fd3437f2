//! End-to-end tests: the real `crops-orchestrator` and the static `crops-agent`
//! binaries, real Podman, real TCP sockets and real TLS with a CA made per test.
//! `make test` builds the binaries once and points the harness at them.

mod containers;
mod credentials;
mod dashboard_browser;
mod doctor;
mod egress;
mod gitserve;
mod images;
mod layers;
mod lifecycle;
mod platforms;
mod profiles;
mod proxy;
mod replicas;
mod rootless;
mod terminal_browser;
mod terminal_socket;
mod urls;

use crops_e2e::{browser, fleet, harness, http, term};
