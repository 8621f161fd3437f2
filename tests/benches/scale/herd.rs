//! The simulated fleet in child processes: one process may hold at most
//! 20,000 open files here (`ulimit -Hn`), so a fleet of 30,000 agents is
//! split over children of at most [`PER_CHILD`] agents each. A child is
//! this bench binary run again with [`CHILD_ENV`] naming a spec file (the
//! replicas' addresses, the CA, the credentials file and its share of it);
//! it runs its agents (`fleet`) and prints a JSON line of its counters
//! every [`REPORT`], the first once its agents have all registered or
//! failed. It exits when its stdin closes, so no child outlives the bench.
//! `CROPS_FLEET_PER_CHILD` lowers the share (to try the split with a
//! small fleet).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::client::Certs;
use crate::fleet;

/// The environment variable that makes this binary a fleet child.
pub const CHILD_ENV: &str = "CROPS_SCALE_FLEET_CHILD";
/// Agents per child: 15,000 sockets and change, under the 20,000 limit.
pub const PER_CHILD: usize = 15_000;
/// How often a child reports.
const REPORT: Duration = Duration::from_millis(200);

/// A child's counters, as its latest line said (see `fleet::Stats`).
#[derive(Debug, Default, Clone)]
pub struct Counts {
    pub ready: bool,
    pub registered: u64,
    pub failed: u64,
    pub dropped: u64,
    pub reconnected: u64,
    pub retries: u64,
    pub heartbeats: u64,
    pub last_register_ms: u64,
    /// Open registered connections per replica.
    pub connected: Vec<i64>,
    pub reasons: Vec<String>,
}

impl Counts {
    fn parse(v: &Value) -> Self {
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        Self {
            ready: v["ready"].as_bool().unwrap_or(false),
            registered: n("registered"),
            failed: n("failed"),
            dropped: n("dropped"),
            reconnected: n("reconnected"),
            retries: n("retries"),
            heartbeats: n("heartbeats"),
            last_register_ms: n("lastRegisterMs"),
            connected: v["connected"]
                .as_array()
                .map(|a| a.iter().map(|c| c.as_i64().unwrap_or(0)).collect())
                .unwrap_or_default(),
            reasons: v["reasons"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|r| Some(r.as_str()?.to_owned()))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// The sum of several children's counts.
    fn add(&mut self, other: &Counts) {
        self.registered += other.registered;
        self.failed += other.failed;
        self.dropped += other.dropped;
        self.reconnected += other.reconnected;
        self.retries += other.retries;
        self.heartbeats += other.heartbeats;
        self.last_register_ms = self.last_register_ms.max(other.last_register_ms);
        if self.connected.len() < other.connected.len() {
            self.connected.resize(other.connected.len(), 0);
        }
        for (sum, c) in self.connected.iter_mut().zip(&other.connected) {
            *sum += c;
        }
        for r in &other.reasons {
            if self.reasons.len() < 5 && !self.reasons.contains(r) {
                self.reasons.push(r.clone());
            }
        }
    }
}

/// The fleet's children, killed when dropped.
pub struct Herd {
    children: Vec<Child>,
    counts: Vec<Arc<Mutex<Counts>>>,
}

impl Herd {
    /// Start `credentials.len()` agents over `addrs` in as few children as
    /// the open-files limit allows, `parallel` handshakes at a time in all.
    pub fn spawn(
        dir: &Path,
        certs: &Certs,
        addrs: &[SocketAddr],
        credentials: &[String],
        reconnect: bool,
        parallel: usize,
    ) -> std::io::Result<Self> {
        let file = dir.join("credentials");
        std::fs::write(&file, credentials.join("\n"))?;
        let total = credentials.len();
        let per_child = std::env::var("CROPS_FLEET_PER_CHILD")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .map_or(PER_CHILD, |n| n.clamp(1, PER_CHILD));
        let children = total.div_ceil(per_child).max(1);
        let exe = std::env::current_exe()?;
        let mut herd = Herd {
            children: Vec::new(),
            counts: Vec::new(),
        };
        for c in 0..children {
            let first = total * c / children;
            let spec = json!({
                "addrs": addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                "ca": certs.ca_file,
                "credentials": file,
                "first": first,
                "count": total * (c + 1) / children - first,
                "reconnect": reconnect,
                "parallel": (parallel / children).max(1),
            });
            let spec_file = dir.join(format!("fleet-{c}.json"));
            std::fs::write(&spec_file, spec.to_string())?;
            let mut child = Command::new(&exe)
                .env(CHILD_ENV, &spec_file)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()?;
            let stdout = child.stdout.take().expect("piped");
            let counts = Arc::new(Mutex::new(Counts::default()));
            let sink = Arc::clone(&counts);
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Ok(v) = serde_json::from_str::<Value>(&line) {
                        *sink.lock().unwrap_or_else(|e| e.into_inner()) = Counts::parse(&v);
                    }
                }
            });
            herd.children.push(child);
            herd.counts.push(counts);
        }
        Ok(herd)
    }

    /// Every child's latest counts, summed.
    pub fn counts(&self) -> Counts {
        let mut sum = Counts::default();
        let mut ready = true;
        for c in &self.counts {
            let c = c.lock().unwrap_or_else(|e| e.into_inner());
            ready &= c.ready;
            sum.add(&c);
        }
        sum.ready = ready;
        sum
    }

    /// Wait until every child has reported its agents registered or failed
    /// (or one of them has exited).
    pub fn wait_ready(&mut self) -> Counts {
        loop {
            let counts = self.counts();
            let exited = self
                .children
                .iter_mut()
                .any(|c| matches!(c.try_wait(), Ok(Some(_))));
            if counts.ready || exited {
                return counts;
            }
            std::thread::sleep(REPORT / 4);
        }
    }

    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }
}

impl Drop for Herd {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The child's side: run the share the spec file names, report until
/// stdin closes.
pub fn child_main(spec_file: PathBuf) {
    let spec: Value = std::fs::read_to_string(&spec_file)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| panic!("unreadable fleet spec {}", spec_file.display()));
    let addrs: Vec<SocketAddr> = spec["addrs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str()?.parse().ok())
        .collect();
    let path = |k: &str| PathBuf::from(spec[k].as_str().unwrap_or_default());
    let num = |k: &str| spec[k].as_u64().unwrap_or(0) as usize;
    let connector = Certs::connector_from(&path("ca")).expect("the CA file");
    let all = std::fs::read_to_string(path("credentials")).expect("the credentials file");
    let (first, count) = (num("first"), num("count"));
    let mine: Vec<String> = all
        .lines()
        .skip(first)
        .take(count)
        .map(str::to_owned)
        .collect();
    // The parent closes our stdin when it is done (or dies): then we go.
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    let stats = Arc::new(fleet::Stats::new(addrs.len()));
    let target = fleet::Target {
        addrs,
        connector,
        reconnect: spec["reconnect"].as_bool().unwrap_or(false),
        containers_of: None,
    };
    smol::block_on(async {
        let tasks = fleet::start(target, mine, first, num("parallel"), Arc::clone(&stats)).await;
        let mut out = std::io::stdout().lock();
        let mut next = Instant::now();
        loop {
            if writeln!(out, "{}", report(&stats))
                .and_then(|_| out.flush())
                .is_err()
            {
                break;
            }
            next += REPORT;
            smol::Timer::at(next).await;
        }
        drop(tasks);
    });
}

/// One report line: the counters of `fleet::Stats`, as JSON.
fn report(stats: &fleet::Stats) -> Value {
    let n = |a: &std::sync::atomic::AtomicUsize| a.load(Ordering::Relaxed);
    json!({
        "ready": true,
        "registered": n(&stats.registered),
        "failed": n(&stats.failed),
        "dropped": n(&stats.dropped),
        "reconnected": n(&stats.reconnected),
        "retries": n(&stats.retries),
        "heartbeats": stats.heartbeats.load(Ordering::Relaxed),
        "lastRegisterMs": stats.last_register_ms.load(Ordering::Relaxed),
        "connected": stats.connected.iter().map(|c| c.load(Ordering::Relaxed)).collect::<Vec<_>>(),
        "reasons": stats.reasons.lock().map(|r| r.clone()).unwrap_or_default(),
    })
}
