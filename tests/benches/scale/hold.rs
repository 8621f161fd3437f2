//! The simulated fleet held by one deployment: enrol the fleet (the
//! workers the write measurement enrolled, then the rest), start its
//! agents in child processes (`herd`) spread evenly over the replicas,
//! let the first heartbeats settle, then measure a steady window of
//! `CROPS_FLEET_HOLD_SECS`: each replica's CPU and RSS, the heartbeats the
//! fleet sent, and, on PostgreSQL, the transactions the database committed
//! (`pg_stat_database.xact_commit`) in the same window, so the reader sees
//! that heartbeats are stored in batches, not one round trip each.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::client::{cpu_secs, rss_kib, threads, Api, Certs, ClientError};
use crate::herd::{Counts, Herd};
use crate::topology::Deployment;
use crate::writes::{self, Measured};

/// Handshakes in flight at once, over the whole fleet.
const PARALLEL: usize = 256;
/// Time for the first heartbeats after the ramp to settle.
const SETTLE: Duration = Duration::from_secs(12);

/// How big a fleet, held how long.
pub struct Size {
    pub agents: usize,
    pub hold: Duration,
}

/// What the fleet measurement found, for the failover that follows.
pub struct Held {
    pub herd: Herd,
    pub agents: usize,
}

/// The value of an unlabelled sample in Prometheus text.
pub fn metric(text: &str, name: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or("?")
        .trim()
        .to_owned()
}

/// `/metrics` of replica `i`, on a fresh connection.
pub async fn scrape(dep: &Deployment, i: usize, certs: &Certs, admin: &str) -> String {
    match Api::connect(dep.addrs[i], &certs.connector(), admin).await {
        Ok(mut api) => api.call_text("/metrics").await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Credentials for `agents` workers: the measured enrolment's, then
/// tokens minted and workers enrolled at 64 clients for the rest.
async fn fleet_credentials(
    dep: &Deployment,
    certs: &Certs,
    admin: &str,
    measured: Measured,
    agents: usize,
) -> Result<Vec<String>, ClientError> {
    let mut credentials = measured.credentials;
    if credentials.len() >= agents {
        credentials.truncate(agents);
        return Ok(credentials);
    }
    let mut tokens = measured.spare_tokens;
    let missing = agents - credentials.len();
    if tokens.len() < missing {
        let need = missing - tokens.len();
        let (_, more) = writes::mint(dep.front, certs, admin, &measured.tenant, need, 64).await?;
        tokens.extend(more);
    }
    tokens.truncate(missing);
    let (rate, more) = writes::enrol(dep.front, certs, tokens, credentials.len()).await?;
    println!(
        "enrolled the rest of the fleet: {} workers at {} clients, {:.0}/s\n",
        rate.n,
        writes::ENROL_CLIENTS,
        rate.per_sec()
    );
    credentials.extend(more);
    Ok(credentials)
}

/// Per-process figures of a window.
struct Window {
    secs: f64,
    cpu: Vec<f64>,
    beats: f64,
    commits: Option<f64>,
    pg_cpu: Option<f64>,
    fleet_cpu: f64,
}

fn sum_cpu(pids: &[u32]) -> f64 {
    pids.iter().map(|&p| cpu_secs(p)).sum()
}

/// Enrol and start the fleet on `dep`, hold it, print the section.
pub async fn hold(
    dep: &Deployment,
    dir: &Path,
    certs: &Certs,
    admin: &str,
    measured: Measured,
    size: Size,
    idle_rss: &[u64],
) -> Result<Held, ClientError> {
    let Size { agents, hold } = size;
    let n = dep.addrs.len();
    let pids: Vec<u32> = (0..n).filter_map(|i| dep.pid(i)).collect();
    let over = match n {
        1 => "one orchestrator".to_owned(),
        n => format!("{n} replicas, directly"),
    };
    println!(
        "\n### Simulated fleet on {}: {agents} idle TLS agents over {over}, 10 s heartbeats\n",
        dep.kind.name()
    );
    let credentials = fleet_credentials(dep, certs, admin, measured, agents).await?;
    let enrolled_rss: Vec<u64> = pids.iter().map(|&p| rss_kib(p)).collect();

    let t = Instant::now();
    let cpu0: Vec<f64> = pids.iter().map(|&p| cpu_secs(p)).collect();
    let mut herd = Herd::spawn(dir, certs, &dep.addrs, &credentials, n > 1, PARALLEL)?;
    let ramped = herd.wait_ready();
    let ramp = t.elapsed();
    let ramp_cpu: f64 = pids.iter().zip(&cpu0).map(|(&p, c)| cpu_secs(p) - c).sum();
    smol::Timer::after(SETTLE).await;

    let before = (
        Instant::now(),
        pids.iter().map(|&p| cpu_secs(p)).collect::<Vec<_>>(),
        herd.counts().heartbeats,
        dep.pg_commits(),
        dep.pg_usage(),
        sum_cpu(&herd.pids()),
    );
    let rss1: Vec<u64> = pids.iter().map(|&p| rss_kib(p)).collect();
    smol::Timer::after(hold).await;
    let secs = before.0.elapsed().as_secs_f64();
    let counts = herd.counts();
    let pg_usage = dep.pg_usage();
    let window = Window {
        secs,
        cpu: pids
            .iter()
            .zip(&before.1)
            .map(|(&p, c)| (cpu_secs(p) - c) / secs)
            .collect(),
        beats: (counts.heartbeats - before.2) as f64 / secs,
        commits: (dep.pg_commits().zip(before.3)).map(|(a, b)| a.saturating_sub(b) as f64 / secs),
        pg_cpu: pg_usage.zip(before.4).map(|(a, b)| (a.0 - b.0) / secs),
        fleet_cpu: (sum_cpu(&herd.pids()) - before.5) / secs,
    };
    let rss: Vec<u64> = pids.iter().map(|&p| rss_kib(p)).collect();
    let mut scraped = Vec::new();
    for i in 0..n {
        scraped.push(scrape(dep, i, certs, admin).await);
    }
    let fleet_rss: u64 = herd.pids().iter().map(|&p| rss_kib(p)).sum();

    println!("| measurement | value |");
    println!("|---|---|");
    println!(
        "| agents registered / asked | {} / {agents} |",
        ramped.registered
    );
    println!(
        "| connect + register ramp ({PARALLEL} handshakes at a time) | {:.1} s ({ramp_cpu:.1} s orchestrator CPU) |",
        ramp.as_secs_f64()
    );
    println!(
        "| agents lost during the run | {} |",
        counts.failed + counts.dropped
    );
    let online: Vec<String> = scraped
        .iter()
        .map(|m| metric(m, "crops_workers_online"))
        .collect();
    println!(
        "| workers online at the end (`crops_workers_online`{}) | {} |",
        if n > 1 { ", per replica" } else { "" },
        online.join(" / ")
    );
    println!(
        "| heartbeats stored per second (steady window {:.0} s) | {:.0} |",
        window.secs, window.beats
    );
    if let Some(commits) = window.commits {
        println!(
            "| PostgreSQL transactions committed per second, same window (`pg_stat_database.xact_commit`) | {commits:.1} ({:.3} per heartbeat) |",
            commits / window.beats.max(1e-9)
        );
    }
    if let (Some(cpu), Some((_, pg_rss))) = (window.pg_cpu, pg_usage) {
        println!(
            "| PostgreSQL CPU / memory (all its processes, PSS) | {cpu:.3} cores / {pg_rss} KiB |"
        );
    }
    let fleet_row = format!(
        "| simulated fleet: {} process(es), CPU / RSS | {:.3} cores / {fleet_rss} KiB |",
        herd.pids().len(),
        window.fleet_cpu
    );
    if n == 1 {
        single(
            &window,
            idle_rss[0],
            enrolled_rss[0],
            rss1[0],
            rss[0],
            pids[0],
            agents,
        );
        println!("{fleet_row}");
    } else {
        println!("{fleet_row}");
        replicas(
            dep,
            &window,
            &counts,
            &scraped,
            idle_rss,
            &enrolled_rss,
            &rss,
        );
    }
    if !counts.reasons.is_empty() {
        println!("\nhow connections ended (distinct): {:?}", counts.reasons);
    }
    Ok(Held { herd, agents })
}

/// The rows of one orchestrator holding the whole fleet (the redb run's
/// figures since issue 4).
fn single(w: &Window, idle: u64, enrolled: u64, start: u64, rss: u64, pid: u32, agents: usize) {
    let cpu = w.cpu[0];
    let gib = rss as f64 / (1024.0 * 1024.0);
    let per_agent = rss.saturating_sub(enrolled) as f64 / agents.max(1) as f64;
    println!(
        "| orchestrator CPU while holding the fleet | {cpu:.3} cores ({:.1} % of 2) |",
        cpu * 50.0
    );
    println!("| orchestrator RSS: idle / after enrolment / holding the fleet | {idle} / {enrolled} / {rss} KiB |");
    println!("| orchestrator RSS at the start / end of the steady window | {start} / {rss} KiB |");
    println!("| orchestrator RSS per agent (holding minus after enrolment) | {per_agent:.1} KiB |");
    println!(
        "| agents per GiB of orchestrator RSS (whole process) | {:.0} |",
        agents as f64 / gib
    );
    println!("| orchestrator threads | {} |", threads(pid));
}

/// A column per replica: agents, CPU, RSS.
fn replicas(
    dep: &Deployment,
    w: &Window,
    counts: &Counts,
    scraped: &[String],
    idle: &[u64],
    enrolled: &[u64],
    rss: &[u64],
) {
    let names = dep.names();
    let total_cpu: f64 = w.cpu.iter().sum();
    println!("\n| per replica | {} | total |", names.join(" | "));
    println!("|---|{}---|", "---|".repeat(names.len()));
    let row = |what: &str, cells: Vec<String>, total: String| {
        println!("| {what} | {} | {total} |", cells.join(" | "));
    };
    let connected: Vec<String> = scraped
        .iter()
        .map(|m| metric(m, "crops_workers_connected"))
        .collect();
    let sum: u64 = connected.iter().filter_map(|c| c.parse::<u64>().ok()).sum();
    row(
        "agents registered (`crops_workers_connected`)",
        connected,
        sum.to_string(),
    );
    let fleet: Vec<String> = counts.connected.iter().map(i64::to_string).collect();
    let held: i64 = counts.connected.iter().sum();
    row(
        "agents connected, as the fleet counts them",
        fleet,
        held.to_string(),
    );
    let cpu = w.cpu.iter().map(|c| format!("{c:.3}")).collect();
    row("CPU while holding (cores)", cpu, format!("{total_cpu:.3}"));
    let kib = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>();
    let total = |v: &[u64]| v.iter().sum::<u64>().to_string();
    row("RSS idle (KiB)", kib(idle), total(idle));
    row("RSS after enrolment (KiB)", kib(enrolled), total(enrolled));
    row("RSS holding the fleet (KiB)", kib(rss), total(rss));
    let threads = (0..names.len())
        .map(|i| dep.pid(i).map_or(0, threads).to_string())
        .collect();
    row("threads", threads, String::new());
}
