//! What the orchestrator and agent add to each container operation, measured
//! against the same operation run directly with the podman CLI, in one run:
//! create, start, exec of `true`, stop, remove. Iterations interleave the two
//! paths so drift on the machine falls on both alike. Prints a Markdown table.
//!
//! Two comparisons, because Podman's own run-to-run spread (several ms on
//! create and start) is larger than what Crops adds:
//! * *interleaved*: the API call's time against a separate direct `podman`
//!   run of the same operation (two different Podman runs, so their spread
//!   adds up);
//! * *paired*: the API call's time minus the time of the very `podman`
//!   processes the agent ran for it (the agent logs each one at debug level,
//!   `podman done verb=… elapsed_us=…`; a Standard create runs two, `image
//!   inspect` for its egress relay's command, then `create`), i.e. exactly
//!   what HTTPS, the orchestrator, the WebSocket and the agent add around
//!   Podman.
//!
//! The direct path runs what the agent runs for a Standard container: the
//! image inspect, then the create with the egress relay as entrypoint.
//!
//! With `CROPS_BENCH_REPLICAS=1`, a second section measures the paired
//! times again on two replicas on PostgreSQL, on the agent's replica and
//! across replicas (`lifecycle/replicas.rs`).
//!
//! Run: `make bench` or `cargo bench -p crops-e2e --bench lifecycle_latency`
//! (with CROPS_AGENT_BIN set; `CROPS_BENCH_N` iterations, default 40).

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crops_e2e::fleet::{test_image, Fleet};
use crops_e2e::{harness, http};

#[path = "lifecycle/replicas.rs"]
mod replicas;

const OPS: [&str; 5] = ["create", "start", "exec true", "stop", "remove"];

fn podman(args: &[&str]) -> Duration {
    let t = Instant::now();
    let out = Command::new("podman")
        .args(args)
        .env("CONTAINERS_CONF", harness::containers_conf())
        .output()
        .expect("podman");
    let d = t.elapsed();
    assert!(
        out.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    d
}

fn timed(f: impl FnOnce() -> http::Answer) -> Duration {
    let t = Instant::now();
    let a = f();
    let d = t.elapsed();
    assert!(a.status < 300, "{a:?}");
    d
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let n: usize = std::env::var("CROPS_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    // The product's heartbeat interval: a 1-second heartbeat (the tests')
    // would put a `podman ps` beside every measured operation.
    std::env::set_var("CROPS_E2E_HEARTBEAT_SECS", "10");
    // The agent times every podman process it runs (debug level).
    let debug = vec![("RUST_LOG".to_owned(), "info,agent::podman=debug".to_owned())];
    let f = Fleet::start_with_env("bench", debug.clone());
    let image = test_image();
    let ws = f.dir.path("direct-ws");
    std::fs::create_dir_all(&ws).unwrap();
    let volume = format!("{}:/workspace:Z", ws.display());
    let gate_dir = f.dir.path("direct-gate");
    std::fs::create_dir_all(&gate_dir).unwrap();
    let gate = format!("{}:/.crops/egress:ro", gate_dir.display());
    let relay = format!("{}:/.crops/crops-egress:ro", harness::agent_bin().display());
    let mut direct: Vec<Vec<Duration>> = vec![Vec::new(); OPS.len()];
    let mut crops: Vec<Vec<Duration>> = vec![Vec::new(); OPS.len()];
    // Every round's API time, warm-ups included, for the breakdown below.
    let mut every: Vec<Vec<Duration>> = vec![Vec::new(); OPS.len()];
    // One kept-alive HTTPS connection, as a dashboard or CLI session holds.
    let mut api = f.api.conn();
    for i in 0..n + 2 {
        // The direct path runs the argv the agent builds for the Standard
        // profile: the image's command read first, then the create with
        // the egress relay as its entrypoint (its gate is not served here).
        let name = format!("bench-direct-{}-{i}", std::process::id());
        let id_label = format!("crops.container-id=bench-direct-{i}");
        let inspect = podman(&["image", "inspect", "--format", "json", "--", &image]);
        let d = [
            inspect
                + podman(&[
                    "create",
                    "--pull",
                    "never",
                    "--name",
                    &name,
                    "--label",
                    "crops.managed=bench",
                    "--label",
                    &id_label,
                    "--volume",
                    &volume,
                    "--network",
                    "none",
                    "--cap-drop",
                    "ALL",
                    "--security-opt",
                    "no-new-privileges",
                    "--memory",
                    "4g",
                    "--cpus",
                    "2",
                    "--pids-limit",
                    "256",
                    "--volume",
                    &gate,
                    "--volume",
                    &relay,
                    "--env",
                    "HTTP_PROXY=http://127.0.0.1:3128",
                    "--env",
                    "HTTPS_PROXY=http://127.0.0.1:3128",
                    "--env",
                    "NO_PROXY=localhost,127.0.0.1,::1",
                    "--entrypoint",
                    r#"["/.crops/crops-egress","--"]"#,
                    "--",
                    &image,
                    "sleep",
                    "3600",
                ]),
            podman(&["start", "--", &name]),
            podman(&["exec", "--", &name, "true"]),
            podman(&["stop", "-t", "0", "--", &name]),
            podman(&["rm", "--force", "-t", "0", "--", &name]),
        ];
        let cname = format!("bench-crops-{i}");
        let create = json!({
            "tenantId": f.tenant, "workerId": f.worker, "name": cname,
            "image": image, "command": ["sleep", "3600"],
        });
        let mut id = String::new();
        let c = [
            timed(|| {
                let a = api.request("POST", "/v1/containers", Some(create));
                id = a.body["id"].as_str().unwrap_or_default().to_string();
                a
            }),
            timed(|| api.request("POST", &format!("/v1/containers/{id}/start"), None)),
            timed(|| {
                let exec = json!({"command": ["true"]});
                api.request("POST", &format!("/v1/containers/{id}/exec"), Some(exec))
            }),
            timed(|| {
                let stop = json!({"timeoutSecs": 0});
                api.request("POST", &format!("/v1/containers/{id}/stop"), Some(stop))
            }),
            timed(|| api.request("DELETE", &format!("/v1/containers/{id}?force=true"), None)),
        ];
        for k in 0..OPS.len() {
            every[k].push(c[k]);
        }
        if i >= 2 {
            // The first two rounds warm caches on both paths and are not counted.
            for k in 0..OPS.len() {
                direct[k].push(d[k]);
                crops[k].push(c[k]);
            }
        }
    }
    // The hub's own timing of each command (send to reply), from /metrics,
    // before the relay part adds commands of its own.
    let metrics = api.request("GET", "/metrics", None);
    let metrics = metrics.body.as_str().unwrap_or_default().to_owned();
    // The relay alone: a capture of a background job is answered from the
    // agent's memory, so this is HTTPS + orchestrator + WebSocket + agent with
    // no Podman process in the way.
    let id = f.running("bench-relay", json!({}));
    let bg = api.request(
        "POST",
        &format!("/v1/containers/{id}/background"),
        Some(json!({"command": ["sleep", "600"]})),
    );
    let handle = bg.body["handle"].as_str().expect("a handle").to_string();
    let capture = format!("/v1/containers/{id}/background/{handle}?offset=0");
    let mut relay: Vec<Duration> = (0..n * 25)
        .map(|_| timed(|| api.request("GET", &capture, None)))
        .collect();
    println!(
        "relay round trip (API -> orchestrator -> agent -> back, no Podman), {} calls: \
         p50 {:.3} ms, p99 {:.3} ms\n",
        relay.len(),
        ms(pct(&mut relay, 0.5)),
        ms(pct(&mut relay, 0.99))
    );
    // The agent's podman time for each crops call, in call order: the
    // loop above is the only source of these verbs before the relay part.
    let log = f.agent.as_ref().expect("the agent runs").log_text();
    let engine = replicas::podman_times(&log);
    // Paired before the tables sort `crops` in place.
    let mut paired = vec![
        String::new(),
        "paired: each API call minus the podman process the agent ran for it\n".to_owned(),
        "| operation | calls | added p50 | added p99 | added mean |".to_owned(),
        "|---|---|---|---|---|".to_owned(),
    ];
    // Each operation's sorted added times, for the replicas' table.
    let mut redb: Vec<Vec<f64>> = Vec::new();
    for (k, op) in OPS.iter().enumerate() {
        // Skip the two warm-up rounds, as above; crops[k] holds the rest.
        let ran = engine[k].iter().skip(2).take(crops[k].len());
        let mut added: Vec<f64> = crops[k]
            .iter()
            .zip(ran)
            .map(|(c, e)| ms(*c) - ms(*e))
            .collect();
        assert_eq!(
            added.len(),
            crops[k].len(),
            "{op}: agent log lacks podman timings"
        );
        added.sort_by(f64::total_cmp);
        let mean = added.iter().sum::<f64>() / added.len() as f64;
        paired.push(format!(
            "| {op} | {} | {:+.2} | {:+.2} | {:+.2} |",
            added.len(),
            replicas::at(&added, 0.5),
            replicas::at(&added, 0.99),
            mean
        ));
        redb.push(added);
    }
    // Where the added time goes, as means over every round (warm-ups too,
    // since the hub's histogram has them): API call = orchestrator around
    // the hub + hub exchange; hub exchange = WebSocket and agent + podman.
    let mut breakdown = vec![
        String::new(),
        "breakdown, means over all rounds: API call = orchestrator (HTTP, auth, store, audit) + \
         hub exchange; hub exchange = socket and agent + podman\n"
            .to_owned(),
        "| operation | API call | orchestrator | socket + agent | podman |".to_owned(),
        "|---|---|---|---|---|".to_owned(),
    ];
    for (k, ty) in COMMAND_TYPES.iter().enumerate() {
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let api_ms: Vec<f64> = every[k].iter().map(|d| ms(*d)).collect();
        let podman_ms: Vec<f64> = engine[k].iter().map(|d| ms(*d)).collect();
        let (Some(sum), Some(count)) = (
            metric(&metrics, "crops_command_duration_seconds_sum", ty),
            metric(&metrics, "crops_command_duration_seconds_count", ty),
        ) else {
            panic!("/metrics lacks the command histogram of {ty}:\n{metrics}");
        };
        let hub = sum * 1000.0 / count.max(1.0);
        let (api, podman) = (mean(&api_ms), mean(&podman_ms[..api_ms.len()]));
        breakdown.push(format!(
            "| {} | {api:.2} | {:+.2} | {:+.2} | {podman:.2} |",
            OPS[k],
            api - hub,
            hub - podman
        ));
    }
    println!("{n} iterations of each operation, interleaved; times in ms\n");
    println!("| operation | podman p50 | podman p99 | crops p50 | crops p99 | added p50 | added p99 | ratio p50 |");
    println!("|---|---|---|---|---|---|---|---|");
    for (k, op) in OPS.iter().enumerate() {
        let (dp50, dp99) = (pct(&mut direct[k], 0.5), pct(&mut direct[k], 0.99));
        let (cp50, cp99) = (pct(&mut crops[k], 0.5), pct(&mut crops[k], 0.99));
        println!(
            "| {op} | {:.1} | {:.1} | {:.1} | {:.1} | {:+.1} | {:+.1} | {:.3} |",
            ms(dp50),
            ms(dp99),
            ms(cp50),
            ms(cp99),
            ms(cp50) - ms(dp50),
            ms(cp99) - ms(dp99),
            ms(cp50) / ms(dp50)
        );
    }
    for row in paired.into_iter().chain(breakdown) {
        println!("{row}");
    }
    if std::env::var("CROPS_BENCH_REPLICAS").is_ok_and(|v| v == "1") {
        // The redb orchestrator and its agent stop before the replicas start.
        drop(f);
        replicas::run(n, &redb, debug);
    }
}

/// The hub's command types, in the order of [`OPS`].
const COMMAND_TYPES: [&str; 5] = [
    "container.create",
    "container.start",
    "container.exec",
    "container.stop",
    "container.remove",
];

/// The value of `name{type="ty"}` in a Prometheus text answer.
fn metric(text: &str, name: &str, ty: &str) -> Option<f64> {
    let key = format!("{name}{{type=\"{ty}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
}
