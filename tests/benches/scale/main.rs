//! The orchestrator at scale, on the embedded store and on PostgreSQL, in
//! one run against the release binary with TLS, printed as Markdown for
//! BENCHMARKS.md:
//!
//! 1. **API write throughput with durable commits**, side by side, a
//!    column per topology (`topology`): `redb` (one orchestrator, `serve
//!    --data`), `pg1` (one on PostgreSQL, `fsync` on), `pg3` (three
//!    replicas on one PostgreSQL behind HAProxy in TCP mode, `balance
//!    leastconn`, TLS end to end), each on a fresh store. `POST
//!    /v1/tenants/{id}/join-tokens` at 1, 16 and 64 concurrent keep-alive
//!    clients (through the balancer for `pg3`), then `POST /v1/enroll` at
//!    64 (`writes`). `CROPS_SCALE_TOPOLOGIES=redb,pg1,pg3` selects (the
//!    default is all three); `CROPS_WRITES` sets the writes a row (2,000).
//! 2. **A simulated fleet** (`hold`) on `pg3` when it runs, else on the
//!    first topology: `CROPS_FLEET_AGENTS` TLS WebSocket agents (default
//!    30,000 on `pg3`, 10,000 otherwise), each registered with its own
//!    credential and heartbeating every 10 s, held for
//!    `CROPS_FLEET_HOLD_SECS` (default 60) after 12 s to settle. On `pg3`
//!    the agents connect to the three replicas directly, evenly: through
//!    HAProxy each agent would cost the balancer two descriptors, and one
//!    process here may open at most 20,000 (`ulimit -Hn`). For the same
//!    reason the agents run in child processes of at most 15,000 each
//!    (`herd`: this binary again). Reported: agents per replica, each
//!    replica's RSS and CPU while holding, heartbeats per second next to
//!    PostgreSQL's transactions per second in the same window.
//! 3. **Failover** (`failover`, on `pg3`): kill -9 of the replica holding
//!    a third of the fleet; the time until every agent it held is
//!    registered on the other two (goal: 10,000 within 30 s).
//!
//! `CROPS_SCALE_TOPOLOGIES=redb` gives the issue 4 section alone (its
//! fleet of 10,000 on one redb orchestrator), comparable with earlier runs.
//! `CROPS_SCALE_SERVE_ARGS` adds `serve` options to every orchestrator,
//! e.g. `--max-unauthenticated-per-source 4096`: the simulated fleet comes
//! from one address, as agents behind a TCP balancer do.
//!
//! Run: `tests/bench-fleet.sh` (raises the open-files limit, builds, runs;
//! `CROPS_NO_BUILD=1` reuses the release build), or `cargo bench -p
//! crops-e2e --bench scale` with `CROPS_ORCHESTRATOR_BIN` naming a release
//! build. PostgreSQL (Debian's, `make deps`) and HAProxy must be installed
//! for `pg1` and `pg3`.

mod client;
mod failover;
mod fleet;
mod herd;
mod hold;
mod topology;
mod writes;

use std::path::{Path, PathBuf};
use std::time::Duration;

use client::{env_num, orchestrator_bin, rss_kib, Certs, ClientError};
use topology::{Deployment, Kind};

const ADMIN: &str = "crops_adm_scale-bench-admin-token";

fn main() {
    if let Some(spec) = std::env::var_os(herd::CHILD_ENV) {
        herd::child_main(PathBuf::from(spec));
        return;
    }
    let bin = orchestrator_bin();
    let kinds = match Kind::selected() {
        Ok(kinds) => kinds,
        Err(error) => {
            eprintln!("scale bench: {error}");
            std::process::exit(2);
        }
    };
    // The fleet's deployment: pg3 when it runs, else the first one.
    let host = if kinds.contains(&Kind::Pg3) {
        Kind::Pg3
    } else {
        kinds[0]
    };
    let default_agents = if host == Kind::Pg3 { 30_000 } else { 10_000 };
    let plan = Plan {
        kinds,
        host,
        agents: env_num("CROPS_FLEET_AGENTS", default_agents),
        hold: Duration::from_secs(env_num("CROPS_FLEET_HOLD_SECS", 60) as u64),
        writes: env_num("CROPS_WRITES", 2_000),
    };
    let dir = std::env::temp_dir().join(format!("crops-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let result = smol::block_on(run(&bin, &dir, &plan));
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(error) = result {
        eprintln!("scale bench failed: {error}");
        std::process::exit(1);
    }
}

/// What to run.
struct Plan {
    kinds: Vec<Kind>,
    /// The deployment that holds the fleet (measured last, kept running).
    host: Kind,
    agents: usize,
    hold: Duration,
    writes: usize,
}

async fn run(bin: &Path, dir: &Path, plan: &Plan) -> Result<(), ClientError> {
    let certs = Certs::new(dir);
    // The fleet's host last, so it is the one left running for the fleet.
    let mut order: Vec<Kind> = plan
        .kinds
        .iter()
        .copied()
        .filter(|k| *k != plan.host)
        .collect();
    order.push(plan.host);
    let mut results = Vec::new();
    let mut kept = None;
    for kind in order {
        let dep = Deployment::start(kind, bin, &dir.join(kind.name()), &certs, ADMIN)?;
        let idle: Vec<u64> = (0..dep.addrs.len())
            .map(|i| dep.pid(i).map_or(0, rss_kib))
            .collect();
        let measured = writes::measure(dep.front, &certs, ADMIN, plan.writes).await?;
        if kind == plan.host {
            kept = Some((dep, idle));
        }
        results.push((kind, measured));
    }
    let names: Vec<&str> = plan.kinds.iter().map(|k| k.name()).collect();
    let columns: Vec<&writes::Measured> = plan
        .kinds
        .iter()
        .filter_map(|k| results.iter().find(|(r, _)| r == k).map(|(_, m)| m))
        .collect();
    writes::print_table(&names, &columns, plan.writes);

    let Some((mut dep, idle)) = kept else {
        return Ok(());
    };
    let measured = match results.iter().position(|(k, _)| *k == plan.host) {
        Some(i) => results.swap_remove(i).1,
        None => return Ok(()),
    };
    let fleet_dir = dir.join("fleet");
    std::fs::create_dir_all(&fleet_dir)?;
    let held = hold::hold(
        &dep,
        &fleet_dir,
        &certs,
        ADMIN,
        measured,
        hold::Size {
            agents: plan.agents,
            hold: plan.hold,
        },
        &idle,
    )
    .await?;
    if dep.addrs.len() > 1 {
        failover::failover(&mut dep, &held, &certs, ADMIN).await;
    }
    drop(held);
    drop(dep);
    Ok(())
}
