//! The deployments the scale bench compares, each started fresh (its own
//! data directory or its own PostgreSQL cluster) and stopped when dropped:
//!
//! * `redb`: one orchestrator on the embedded store (`serve --data`);
//! * `pg1`: one orchestrator on PostgreSQL (`serve --database`);
//! * `pg3`: three replicas on one PostgreSQL behind HAProxy in TCP mode
//!   (`balance leastconn`, TLS end to end to the replicas, whose
//!   certificate file carries the CA so they verify each other).
//!
//! PostgreSQL runs as in production: `fsync` on, `synchronous_commit` at
//! its default (the test rig's `Postgres::start_durable`), on a Unix
//! socket. API clients reach a deployment at [`Deployment::front`] (the
//! balancer for `pg3`); the simulated fleet connects to each replica
//! directly (through HAProxy every agent would cost it two descriptors,
//! and 30,000 agents are beyond the 20,000 one process may open here).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Child;

use crops_e2e::replicas::{start_haproxy, Postgres};

use crate::client::{cpu_secs, pss_kib, Certs, ClientError, Orchestrator};

/// HAProxy's connection limit: far above the 64 API clients; HAProxy takes
/// two descriptors per connection, so this stays under the 20,000 limit.
const HAPROXY_MAXCONN: u32 = 9_000;

/// Which deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Redb,
    Pg1,
    Pg3,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Redb => "redb",
            Kind::Pg1 => "pg1",
            Kind::Pg3 => "pg3",
        }
    }

    /// `CROPS_SCALE_TOPOLOGIES` (comma-separated; default all three), in
    /// the order given.
    pub fn selected() -> Result<Vec<Kind>, String> {
        let list = std::env::var("CROPS_SCALE_TOPOLOGIES").unwrap_or("redb,pg1,pg3".into());
        let mut kinds = Vec::new();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let kind = match name {
                "redb" => Kind::Redb,
                "pg1" => Kind::Pg1,
                "pg3" => Kind::Pg3,
                other => {
                    return Err(format!(
                        "unknown topology {other:?} in CROPS_SCALE_TOPOLOGIES (redb, pg1, pg3)"
                    ))
                }
            };
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        if kinds.is_empty() {
            return Err("CROPS_SCALE_TOPOLOGIES names no topology".into());
        }
        Ok(kinds)
    }
}

/// A running deployment. Fields drop in order: the balancer, the replicas,
/// then PostgreSQL.
pub struct Deployment {
    pub kind: Kind,
    haproxy: Option<Child>,
    /// The orchestrators; `None` once killed.
    replicas: Vec<Option<Orchestrator>>,
    /// Each replica's address, also after it was killed.
    pub addrs: Vec<SocketAddr>,
    /// Where API clients connect: the balancer for `pg3`.
    pub front: SocketAddr,
    pg: Option<Postgres>,
}

impl Deployment {
    /// Start `kind` in `dir` (created), serving `certs`.
    pub fn start(
        kind: Kind,
        bin: &Path,
        dir: &Path,
        certs: &Certs,
        admin: &str,
    ) -> Result<Self, ClientError> {
        std::fs::create_dir_all(dir)?;
        let os = |s: &str| OsString::from(s);
        let (pg, replicas) = match kind {
            Kind::Redb => (None, 1),
            Kind::Pg1 => (Some(Postgres::start_durable(dir.join("pg"))), 1),
            Kind::Pg3 => (Some(Postgres::start_durable(dir.join("pg"))), 3),
        };
        let mut started = Vec::new();
        for i in 1..=replicas {
            let data = dir.join(format!("r{i}"));
            let mut store = vec![os("--data"), data.into_os_string()];
            if let Some(pg) = &pg {
                // --advertise defaults to the listener's own address,
                // https://127.0.0.1:PORT, which the certificate covers.
                store.extend([os("--database"), os(&pg.url())]);
                store.extend([os("--replica-id"), os(&format!("r{i}"))]);
            }
            started.push(Orchestrator::start(bin, &store, certs, admin)?);
        }
        let addrs: Vec<SocketAddr> = started.iter().map(|o| o.addr).collect();
        let (haproxy, front) = if kind == Kind::Pg3 {
            let ports: Vec<u16> = addrs.iter().map(|a| a.port()).collect();
            let (child, port) = start_haproxy(dir, &ports, HAPROXY_MAXCONN);
            (Some(child), SocketAddr::from(([127, 0, 0, 1], port)))
        } else {
            (None, addrs[0])
        };
        Ok(Self {
            kind,
            haproxy,
            replicas: started.into_iter().map(Some).collect(),
            addrs,
            front,
            pg,
        })
    }

    /// The replicas' names, `r1`…
    pub fn names(&self) -> Vec<String> {
        (1..=self.addrs.len()).map(|i| format!("r{i}")).collect()
    }

    /// Replica `i`'s process id, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.replicas.get(i)?.as_ref().map(Orchestrator::pid)
    }

    /// kill -9 replica `i` and reap it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut o) = self.replicas.get_mut(i).and_then(Option::take) {
            let _ = o.child.kill();
            let _ = o.child.wait();
        }
    }

    /// Transactions committed in the `crops` database so far
    /// (`pg_stat_database.xact_commit`); `None` on redb.
    pub fn pg_commits(&self) -> Option<u64> {
        let pg = self.pg.as_ref()?;
        let sql = "SELECT xact_commit FROM pg_stat_database WHERE datname = 'crops'";
        pg.psql("postgres", sql).trim().parse().ok()
    }

    /// PostgreSQL's processes (the postmaster and its children): their CPU
    /// seconds so far and their memory (PSS, so shared buffers count
    /// once) in KiB, summed.
    pub fn pg_usage(&self) -> Option<(f64, u64)> {
        let root = self.pg.as_ref()?.pid()?;
        let mut pids = vec![root];
        pids.extend(children_of(root));
        Some((
            pids.iter().map(|&p| cpu_secs(p)).sum(),
            pids.iter().map(|&p| pss_kib(p)).sum(),
        ))
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if let Some(mut c) = self.haproxy.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.replicas.clear();
    }
}

/// The processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            // The parent is the second field after the command name.
            stat.rsplit_once(") ")
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                == Some(pid)
        })
        .collect()
}
