//! The orchestrator at scale, two measurements in one run against the
//! release binary with TLS, printed as Markdown for BENCHMARKS.md:
//!
//! 1. **API write throughput with durable commits**: `POST
//!    /v1/tenants/{id}/join-tokens` (one redb write transaction, committed
//!    with full durability before the answer) at 1, 16 and 64 concurrent
//!    keep-alive clients, then `POST /v1/enroll` (a heavier transaction)
//!    at 64, which also enrols the fleet.
//! 2. **A simulated fleet**: `CROPS_FLEET_AGENTS` (default 10,000) TLS
//!    WebSocket agents from this one process (see `fleet`), each
//!    registered with its own credential and heartbeating every 10 s; held
//!    for `CROPS_FLEET_HOLD_SECS` (default 60). Reported: the
//!    orchestrator's RSS and CPU while holding them, and agents per GiB.
//!
//! Run: `tests/bench-fleet.sh` (raises the open-files limit, builds, runs),
//! or `cargo bench -p crops-e2e --bench scale` with
//! `CROPS_ORCHESTRATOR_BIN` naming a release build. `CROPS_WRITES` sets
//! the writes per concurrency level (default 2,000).

mod client;
mod fleet;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use client::{cpu_secs, rss_kib, threads, Api, Certs, Orchestrator};

const ADMIN: &str = "crops_adm_scale-bench-admin-token";

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let bin = std::env::var_os("CROPS_ORCHESTRATOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/crops-orchestrator")
        });
    assert!(
        bin.is_file(),
        "{} not found: build it with `cargo build --release -p crops-orchestrator` or set CROPS_ORCHESTRATOR_BIN",
        bin.display()
    );
    let agents = env_num("CROPS_FLEET_AGENTS", 10_000);
    let hold = Duration::from_secs(env_num("CROPS_FLEET_HOLD_SECS", 60) as u64);
    let writes = env_num("CROPS_WRITES", 2_000);
    let dir = std::env::temp_dir().join(format!("crops-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let result = smol::block_on(run(&bin, &dir, agents, hold, writes));
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(error) = result {
        eprintln!("scale bench failed: {error}");
        std::process::exit(1);
    }
}

/// Latency percentile of a sorted list.
fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len().saturating_sub(1)) as f64 * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

/// `n` calls of `make(i)` spread over `clients` connections; wall time
/// and every call's latency, plus what the calls answered, in order.
async fn burst(
    orch: &Orchestrator,
    certs: &Certs,
    token: &str,
    n: usize,
    clients: usize,
    make: impl Fn(usize) -> (&'static str, String, Value) + Send + Sync + 'static,
) -> Result<(Duration, Vec<Duration>, Vec<Value>), client::ClientError> {
    let make = Arc::new(make);
    let connector = certs.connector();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut api = Api::connect(orch.addr, &connector, token).await?;
        let make = Arc::clone(&make);
        tasks.push(smol::spawn(async move {
            let mut out = Vec::new();
            for i in (c..n).step_by(clients) {
                let (method, path, body) = make(i);
                let t = Instant::now();
                let answer = api.call(method, &path, Some(&body)).await?;
                out.push((i, t.elapsed(), answer));
            }
            Ok::<_, client::ClientError>(out)
        }));
    }
    let mut all = Vec::with_capacity(n);
    for task in tasks {
        all.extend(task.await?);
    }
    let wall = started.elapsed();
    all.sort_by_key(|(i, _, _)| *i);
    let mut latencies: Vec<Duration> = all.iter().map(|(_, d, _)| *d).collect();
    latencies.sort();
    Ok((
        wall,
        latencies,
        all.into_iter().map(|(_, _, v)| v).collect(),
    ))
}

fn row(what: &str, clients: usize, n: usize, wall: Duration, lat: &[Duration]) {
    println!(
        "| {what} | {clients} | {n} | {:.0} | {:.1} | {:.1} |",
        n as f64 / wall.as_secs_f64(),
        pct(lat, 0.5).as_secs_f64() * 1000.0,
        pct(lat, 0.99).as_secs_f64() * 1000.0,
    );
}

async fn run(
    bin: &std::path::Path,
    dir: &std::path::Path,
    agents: usize,
    hold: Duration,
    writes: usize,
) -> Result<(), client::ClientError> {
    let certs = Certs::new(dir);
    let orch = Orchestrator::start(bin, &dir.join("data"), &certs, ADMIN)?;
    let pid = orch.pid();
    let connector = certs.connector();
    let mut admin = Api::connect(orch.addr, &connector, ADMIN).await?;
    let tenant = admin
        .call("POST", "/v1/tenants", Some(&json!({ "name": "fleet" })))
        .await?;
    let tenant = tenant["id"].as_str().unwrap_or_default().to_owned();
    // Thousands of self-hosted workers for one tenant: a plan without a limit.
    let plan = json!({ "name": "enterprise" });
    admin
        .call("PUT", &format!("/v1/tenants/{tenant}/plan"), Some(&plan))
        .await?;
    let idle_rss = rss_kib(pid);

    println!("### API write throughput (durable commits, TLS, keep-alive)\n");
    println!("| write | clients | writes | writes/s | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|---|");
    let mut tokens = Vec::new();
    let mint_path = format!("/v1/tenants/{tenant}/join-tokens");
    for clients in [1, 16, 64] {
        let path = mint_path.clone();
        let (wall, lat, answers) = burst(&orch, &certs, ADMIN, writes, clients, move |_| {
            ("POST", path.clone(), json!({ "ttlSecs": 3600 }))
        })
        .await?;
        row("mint a join token", clients, writes, wall, &lat);
        tokens.extend(
            answers
                .into_iter()
                .map(|v| v["token"].as_str().unwrap_or("").to_owned()),
        );
    }
    if tokens.len() < agents {
        let path = mint_path.clone();
        let (_, _, answers) = burst(&orch, &certs, ADMIN, agents - tokens.len(), 64, move |_| {
            ("POST", path.clone(), json!({}))
        })
        .await?;
        tokens.extend(
            answers
                .into_iter()
                .map(|v| v["token"].as_str().unwrap_or("").to_owned()),
        );
    }
    tokens.truncate(agents);
    let tokens = Arc::new(tokens);
    let enrol_tokens = Arc::clone(&tokens);
    let (wall, lat, answers) = burst(&orch, &certs, "none", agents, 64, move |i| {
        let body = json!({ "joinToken": enrol_tokens[i], "name": format!("sim-{i}") });
        ("POST", "/v1/enroll".to_owned(), body)
    })
    .await?;
    row("enrol a worker", 64, agents, wall, &lat);
    let credentials: Vec<String> = answers
        .iter()
        .map(|v| v["credential"].as_str().unwrap_or("").to_owned())
        .collect();
    let enrolled_rss = rss_kib(pid);

    println!("\n### Simulated fleet: {agents} idle TLS agents, 10 s heartbeats\n");
    let stats = Arc::new(fleet::Stats::default());
    let target = fleet::Target {
        addr: orch.addr,
        connector: connector.clone(),
    };
    let t = Instant::now();
    let cpu0 = cpu_secs(pid);
    let tasks = fleet::start(target, credentials, 256, Arc::clone(&stats)).await;
    let ramp = t.elapsed();
    let ramp_cpu = cpu_secs(pid) - cpu0;
    let registered = stats.registered.load(Ordering::Relaxed);
    // Let the first heartbeats settle, then measure a steady window.
    smol::Timer::after(Duration::from_secs(12)).await;
    let (cpu1, beats1, t1) = (
        cpu_secs(pid),
        stats.heartbeats.load(Ordering::Relaxed),
        Instant::now(),
    );
    let self_cpu1 = cpu_secs(std::process::id());
    let rss1 = rss_kib(pid);
    smol::Timer::after(hold).await;
    let window = t1.elapsed().as_secs_f64();
    let cpu = (cpu_secs(pid) - cpu1) / window;
    let self_cpu = (cpu_secs(std::process::id()) - self_cpu1) / window;
    let beats = (stats.heartbeats.load(Ordering::Relaxed) - beats1) as f64 / window;
    let rss = rss_kib(pid);
    // A fresh connection: the server closes keep-alive connections idle
    // longer than its header timeout.
    drop(admin);
    let mut scraper = Api::connect(orch.addr, &connector, ADMIN).await?;
    let metrics = scraper.call_text("/metrics").await?;
    let online = metric(&metrics, "crops_workers_online");
    let lost = stats.lost.load(Ordering::Relaxed);
    let gib = rss as f64 / (1024.0 * 1024.0);
    let per_agent = (rss.saturating_sub(enrolled_rss)) as f64 / agents.max(1) as f64;

    println!("| measurement | value |");
    println!("|---|---|");
    println!("| agents registered / asked | {registered} / {agents} |");
    println!(
        "| connect + register ramp | {:.1} s ({ramp_cpu:.1} s orchestrator CPU) |",
        ramp.as_secs_f64()
    );
    println!("| agents lost during the run | {lost} |");
    println!("| workers online at the end (`crops_workers_online`) | {online} |");
    println!("| heartbeats stored per second (steady window {window:.0} s) | {beats:.0} |");
    println!(
        "| orchestrator CPU while holding the fleet | {cpu:.3} cores ({:.1} % of 2) |",
        cpu * 50.0
    );
    println!("| orchestrator RSS: idle / after enrolment / holding the fleet | {idle_rss} / {enrolled_rss} / {rss} KiB |");
    println!("| orchestrator RSS at the start / end of the steady window | {rss1} / {rss} KiB |");
    println!("| orchestrator RSS per agent (holding minus after enrolment) | {per_agent:.1} KiB |");
    println!(
        "| agents per GiB of orchestrator RSS (whole process) | {:.0} |",
        agents as f64 / gib
    );
    println!("| orchestrator threads | {} |", threads(pid));
    println!(
        "| simulated fleet process: CPU / RSS | {self_cpu:.3} cores / {} KiB |",
        rss_kib(std::process::id())
    );
    let reasons = stats.reasons.lock().map(|r| r.clone()).unwrap_or_default();
    if !reasons.is_empty() {
        println!("\nfirst reasons agents were lost: {reasons:?}");
    }
    drop(tasks);
    drop(orch);
    Ok(())
}

/// The value of an unlabelled sample in Prometheus text.
fn metric(text: &str, name: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or("?")
        .to_owned()
}
