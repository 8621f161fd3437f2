//! The dashboard at scale, printed as Markdown for BENCHMARKS.md: a release
//! orchestrator (embedded store, TLS) holding a SIMULATED fleet of
//! `CROPS_DASHBOARD_WORKERS` (1,000) agents (`../scale/fleet.rs`: real TLS
//! WebSockets, heartbeats every 10 s, no Podman), each reporting one
//! running container that the orchestrator adopts, so the tenant has as
//! many containers as workers. Then `tests/browser/dashboard-bench.js` in
//! Debian's chromium measures:
//!
//! 1. the time to first render of the workers view (every card shown) and
//!    of the containers view (every row), each from a fresh context with
//!    an empty cache, and the bytes the page transferred (its own files,
//!    and the API's answers, apart);
//! 2. the orchestrator's CPU with `CROPS_DASHBOARDS` (20) dashboards open
//!    on the workers view, live, over `CROPS_DASHBOARD_SECS` (30 s), next
//!    to the same window with the fleet alone.
//!
//! Goals (issue 15): first render under 500 ms with 1,000 workers, under
//! 300 KB on first load, 20 live dashboards under 5 % of one core.
//!
//! Run: `cargo bench -p crops-e2e --bench dashboard` with
//! `CROPS_ORCHESTRATOR_BIN` naming a release build (`make bench` does).

// Shared with the scale bench, which uses more of them than this one does.
#[allow(dead_code)]
#[path = "../scale/client.rs"]
mod client;
#[allow(dead_code)]
#[path = "../scale/fleet.rs"]
mod fleet;
#[allow(dead_code)]
#[path = "../scale/writes.rs"]
mod writes;

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use client::{cpu_secs, env_num, orchestrator_bin, Api, Certs, ClientError, Orchestrator};

const ADMIN: &str = "crops_adm_dashboard_bench_0123456789abcdef";

fn main() {
    let bin = orchestrator_bin();
    let dir = std::env::temp_dir().join(format!("crops-dashboard-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let result = run(&bin, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(error) = result {
        eprintln!("dashboard bench failed: {error}");
        std::process::exit(1);
    }
}

/// The tenant's containers the orchestrator lists.
async fn containers(
    orch: &Orchestrator,
    certs: &Certs,
    tenant: &str,
) -> Result<usize, ClientError> {
    let mut api = Api::connect(orch.addr, &certs.connector(), ADMIN).await?;
    let list = api
        .call("GET", &format!("/v1/containers?tenantId={tenant}"), None)
        .await?;
    Ok(list["containers"].as_array().map_or(0, Vec::len))
}

fn run(bin: &Path, dir: &Path) -> Result<(), ClientError> {
    let n = env_num("CROPS_DASHBOARD_WORKERS", 1_000);
    let dashboards = env_num("CROPS_DASHBOARDS", 20);
    let window = Duration::from_secs(env_num("CROPS_DASHBOARD_SECS", 30) as u64);
    let certs = Certs::new(dir);
    let data: OsString = dir.join("data").into();
    let orch = Orchestrator::start(bin, &["--data".into(), data], &certs, ADMIN)?;
    let front = orch.addr;
    let stats = Arc::new(fleet::Stats::new(1));
    let (tenant, _fleet) = smol::block_on(async {
        let tenant = writes::tenant(front, &certs, ADMIN).await?;
        let (_, tokens) = writes::mint(front, &certs, ADMIN, &tenant, n, 64).await?;
        let (_, credentials) = writes::enrol(front, &certs, tokens, 0).await?;
        let target = fleet::Target {
            addrs: vec![front],
            connector: certs.connector(),
            reconnect: false,
            containers_of: Some(tenant.clone()),
        };
        let tasks = fleet::start(target, credentials, 0, 64, Arc::clone(&stats)).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while containers(&orch, &certs, &tenant).await? < n {
            if Instant::now() > deadline {
                return Err(ClientError::Malformed(
                    "the containers were never all adopted".into(),
                ));
            }
            smol::Timer::after(Duration::from_millis(200)).await;
        }
        Ok::<_, ClientError>((tenant, tasks))
    })?;
    let registered = stats.registered.load(std::sync::atomic::Ordering::Relaxed);
    println!("### Dashboard: {n} SIMULATED workers, one running container each, on one orchestrator (redb)\n");
    println!("Tenant {tenant}: {registered} agents registered, {n} containers listed.\n");

    // The fleet alone, for the baseline.
    let pid = orch.pid();
    let fleet_only = cpu_over(pid, window);

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser/dashboard-bench.js");
    let mut node = Command::new(std::env::var_os("CROPS_NODE").unwrap_or_else(|| "node".into()))
        .arg(&script)
        .env("CROPS_URL", format!("https://{front}"))
        .env("CROPS_TOKEN", ADMIN)
        .env("CROPS_SERVER_CERT", &certs.cert)
        .env("CROPS_N", n.to_string())
        .env("CROPS_DASHBOARDS", dashboards.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = node.stdin.take().ok_or(ClientError::NoListen)?;
    let stdout = node.stdout.take().ok_or(ClientError::NoListen)?;
    let mut first = Value::Null;
    let mut live = None;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(json) = line.strip_prefix("FIRST ") {
            first =
                serde_json::from_str(json).map_err(|e| ClientError::Malformed(e.to_string()))?;
        } else if line == "OPEN" {
            live = Some(cpu_over(pid, window));
            writeln!(stdin, "MEASURED")?;
        } else if line == "PASS" {
            break;
        } else if line.starts_with("FAIL") {
            return Err(ClientError::Malformed(line));
        } else {
            eprintln!("node: {line}");
        }
    }
    let _ = node.wait();
    let live =
        live.ok_or_else(|| ClientError::Malformed("node never opened the dashboards".into()))?;
    print_table(n, dashboards, window, &first, fleet_only, live);
    Ok(())
}

/// The cores process `pid` used over `window`.
fn cpu_over(pid: u32, window: Duration) -> f64 {
    let before = cpu_secs(pid);
    let start = Instant::now();
    std::thread::sleep(window);
    (cpu_secs(pid) - before) / start.elapsed().as_secs_f64()
}

fn kb(v: &Value) -> String {
    format!("{:.1} KB", v.as_f64().unwrap_or(0.0) / 1000.0)
}

fn print_table(
    n: usize,
    dashboards: usize,
    window: Duration,
    first: &Value,
    fleet: f64,
    live: f64,
) {
    println!("| measurement | value |");
    println!("|---|---|");
    for view in ["workers", "containers"] {
        let r = &first[view];
        println!(
            "| first render of the {view} view ({n} shown), empty cache | {:.0} ms |",
            r["ms"].as_f64().unwrap_or(f64::NAN)
        );
        println!(
            "| transferred on that load: the page's files / the API's answers | {} / {} |",
            kb(&r["bytes"]["files"]),
            kb(&r["bytes"]["api"])
        );
    }
    println!(
        "| orchestrator CPU, the fleet alone ({} s) | {:.2} % of one core |",
        window.as_secs(),
        fleet * 100.0
    );
    println!(
        "| orchestrator CPU, the fleet and {dashboards} live dashboards ({} s) | {:.2} % of one core |",
        window.as_secs(),
        live * 100.0
    );
    println!(
        "| what the {dashboards} dashboards add | {:.2} % of one core |",
        (live - fleet) * 100.0
    );
}
