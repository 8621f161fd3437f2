//! The lifecycle bench's second section (`CROPS_BENCH_REPLICAS=1`): the
//! same paired container operations against two replicas on one
//! PostgreSQL (fsync on, as an operator runs it), the agent connected to
//! replica B. Each round makes the five calls on B (same replica) and on A
//! (cross replica: A relays each command to B over its kept-alive HTTPS
//! link), alternating which goes first, so drift falls on both alike. One
//! table then shows, per operation, what Crops adds over the podman
//! process the agent ran, on redb (the first section), on PostgreSQL on
//! the agent's replica, and across replicas, with cross minus same.

use std::time::{Duration, Instant};

use serde_json::json;

use crops_e2e::fleet::{test_image, TenantCleanup};
use crops_e2e::harness::{AgentCmd, Orchestrator, TestDir, Tls};
use crops_e2e::http::{Answer, Conn, Https};
use crops_e2e::replicas::{chained, Postgres};

use super::OPS;

/// The agent's podman time for each call, per operation in [`OPS`] order,
/// in call order: the agent logs each process it runs at debug level
/// (`podman done verb=… elapsed_us=…`).
pub fn podman_times(log: &str) -> Vec<Vec<Duration>> {
    let verbs = ["create", "start", "exec", "stop", "rm"];
    let mut engine: Vec<Vec<Duration>> = vec![Vec::new(); OPS.len()];
    // A Standard create runs `podman image inspect` (for its egress relay's
    // command) just before `podman create`: both are its Podman time.
    let mut inspect = Duration::ZERO;
    for line in log.lines().filter(|l| l.contains("podman done")) {
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .map(str::to_owned)
        };
        let (Some(verb), Some(us)) = (field("verb="), field("elapsed_us=")) else {
            continue;
        };
        let Ok(us) = us.parse::<u64>() else {
            continue;
        };
        if verb == "image" {
            inspect += Duration::from_micros(us);
        } else if let Some(k) = verbs.iter().position(|v| *v == verb) {
            let extra = if k == 0 {
                std::mem::take(&mut inspect)
            } else {
                Duration::ZERO
            };
            engine[k].push(Duration::from_micros(us) + extra);
        }
    }
    engine
}

/// The value at `p` (0..=1) of sorted `v`.
pub fn at(v: &[f64], p: f64) -> f64 {
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Where a call went.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    Same,
    Cross,
}

/// One round's five calls on `api`; the API time of each.
fn round(api: &mut Conn<'_>, tenant: &str, worker: &str, name: &str) -> [Duration; 5] {
    let timed = |f: &mut dyn FnMut() -> Answer| {
        let t = Instant::now();
        let a = f();
        let d = t.elapsed();
        assert!(a.status < 300, "{a:?}");
        d
    };
    let create = json!({
        "tenantId": tenant, "workerId": worker, "name": name,
        "image": test_image(), "command": ["sleep", "3600"],
    });
    let mut id = String::new();
    let c = timed(&mut || {
        let a = api.request("POST", "/v1/containers", Some(create.clone()));
        id = a.body["id"].as_str().unwrap_or_default().to_string();
        a
    });
    let s = timed(&mut || api.request("POST", &format!("/v1/containers/{id}/start"), None));
    let exec = json!({"command": ["true"]});
    let e = timed(&mut || {
        api.request(
            "POST",
            &format!("/v1/containers/{id}/exec"),
            Some(exec.clone()),
        )
    });
    let stop = json!({"timeoutSecs": 0});
    let t = timed(&mut || {
        api.request(
            "POST",
            &format!("/v1/containers/{id}/stop"),
            Some(stop.clone()),
        )
    });
    let r = timed(&mut || api.request("DELETE", &format!("/v1/containers/{id}?force=true"), None));
    [c, s, e, t, r]
}

/// Run the section: `n` counted rounds (after two warm-ups) of each path;
/// `redb[k]` is the first section's sorted paired added times of `OPS[k]`.
pub fn run(n: usize, redb: &[Vec<f64>], agent_env: Vec<(String, String)>) {
    let dir = TestDir::new("bench-replicas");
    let tls = Tls::new(&dir);
    let pg = Postgres::start_durable(dir.path("pg"));
    let served = chained(&dir, &tls);
    // Each advertises its listener's address, https://127.0.0.1:PORT.
    let replica = |id: &str| {
        let args = [
            "--database".to_string(),
            pg.url(),
            "--replica-id".to_string(),
            id.to_string(),
        ];
        Orchestrator::start_named(&dir, &served, id, &args)
    };
    let (a, b) = (replica("A"), replica("B"));
    let tenant = b.create_tenant("bench-replicas");
    let _cleanup = TenantCleanup(tenant.clone());
    let token = b.join_token(&tenant);
    let mut cmd = AgentCmd::native();
    cmd.env = agent_env;
    let config = dir.path("agent/worker.json");
    let worker = cmd.enroll_ok(&b, &token, &config)["workerId"]
        .as_str()
        .unwrap()
        .to_string();
    let agent = cmd.run(&config, dir.path("agent.log"), &[]);
    for o in [&b, &a] {
        o.wait_worker(&worker, "the worker online on both replicas", |w| {
            w["lastHeartbeatAt"].as_u64().is_some()
        });
    }
    let (https_a, https_b) = (
        Https::new(&tls.ca, a.port, &a.admin_token),
        Https::new(&tls.ca, b.port, &b.admin_token),
    );
    let (mut on_a, mut on_b) = (https_a.conn(), https_b.conn());
    // Every call's op, path and API time, in the order it was made.
    let mut calls: Vec<Vec<(Via, Duration)>> = vec![Vec::new(); OPS.len()];
    for i in 0..n + 2 {
        let order = if i % 2 == 0 {
            [Via::Same, Via::Cross]
        } else {
            [Via::Cross, Via::Same]
        };
        for via in order {
            let (api, tag) = match via {
                Via::Same => (&mut on_b, "same"),
                Via::Cross => (&mut on_a, "cross"),
            };
            let name = format!("bench-{tag}-{}-{i}", std::process::id());
            for (k, d) in round(api, &tenant, &worker, &name).into_iter().enumerate() {
                calls[k].push((via, d));
            }
        }
    }
    let engine = podman_times(&agent.log_text());
    let mut rows = vec![
        String::new(),
        format!(
            "replicas on PostgreSQL (fsync on), agent on B: each API call minus the podman \
             process the agent ran for it, ms; {n} calls per path, same (on B) and cross \
             (on A, relayed to B) alternating\n"
        ),
        "| operation | redb p50 | redb p99 | pg same p50 | pg same p99 | pg cross p50 | \
         pg cross p99 | cross - same p50 | cross - same p99 |"
            .to_owned(),
        "|---|---|---|---|---|---|---|---|---|".to_owned(),
    ];
    for (k, op) in OPS.iter().enumerate() {
        assert_eq!(
            engine[k].len(),
            calls[k].len(),
            "{op}: the agent log's podman timings do not match the calls"
        );
        // Two warm-up rounds of both paths are not counted.
        let counted = calls[k].iter().zip(&engine[k]).skip(4);
        let mut same = Vec::new();
        let mut cross = Vec::new();
        for ((via, api), podman) in counted {
            let added = ms(*api) - ms(*podman);
            match via {
                Via::Same => same.push(added),
                Via::Cross => cross.push(added),
            }
        }
        same.sort_by(f64::total_cmp);
        cross.sort_by(f64::total_cmp);
        rows.push(format!(
            "| {op} | {:+.2} | {:+.2} | {:+.2} | {:+.2} | {:+.2} | {:+.2} | {:+.2} | {:+.2} |",
            at(&redb[k], 0.5),
            at(&redb[k], 0.99),
            at(&same, 0.5),
            at(&same, 0.99),
            at(&cross, 0.5),
            at(&cross, 0.99),
            at(&cross, 0.5) - at(&same, 0.5),
            at(&cross, 0.99) - at(&same, 0.99),
        ));
    }
    for row in rows {
        println!("{row}");
    }
}
