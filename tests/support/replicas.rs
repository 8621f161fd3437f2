//! Several orchestrators on one PostgreSQL behind HAProxy, as an operator
//! runs them: a real PostgreSQL server (Debian's `initdb` and `pg_ctl`, on a
//! Unix socket in the test's directory, run as the `postgres` user when we
//! are root, since initdb refuses root); three `crops-orchestrator serve
//! --database ... --replica-id rN` processes, each on a port of its own
//! choosing and advertised to the others as its listener's address
//! (`https://127.0.0.1:PORT`, which the certificate covers), serving the
//! test's certificate and its CA in one chain file (replicas verify each
//! other against their own certificate file: a leaf alone would not do);
//! and HAProxy in TCP mode in front (least connections, so agents'
//! long-lived sockets spread over the replicas; a TLS check of `/readyz`).
//! Nothing listens on a fixed port but the balancer, on a port the kernel
//! just handed out. Everything stops when the [`Replicas`] is dropped, on
//! a panic too.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::*;
use crate::http::Https;

/// The newest installed PostgreSQL's `bin` directory.
fn pg_binaries() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): run `make deps`"
        ),
    }
}

/// Whether this process runs as root (the owner of `/proc/self`).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `program`, run as `postgres` when we are root.
fn as_pg_owner(program: &Path) -> Command {
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

/// A PostgreSQL server of this test, stopped (immediate mode) on drop.
pub struct Postgres {
    bin: PathBuf,
    dir: PathBuf,
}

impl Postgres {
    /// initdb and start in `dir` (created), with a database `crops`;
    /// fsync off (the tests': the server's own crash safety is not under
    /// test).
    pub fn start(dir: PathBuf) -> Self {
        Self::start_with(dir, false)
    }

    /// As [`Postgres::start`], but durable as in production (`fsync` on,
    /// `synchronous_commit` at its default): what a benchmark measures.
    pub fn start_durable(dir: PathBuf) -> Self {
        Self::start_with(dir, true)
    }

    fn start_with(dir: PathBuf, fsync: bool) -> Self {
        let bin = pg_binaries();
        std::fs::create_dir_all(&dir).unwrap();
        if is_root() {
            run_ok({
                let mut c = Command::new("chown");
                c.arg("postgres:").arg(&dir);
                c
            });
        }
        let pg = Postgres { bin, dir };
        let mut initdb = as_pg_owner(&pg.bin.join("initdb"));
        initdb.arg("-D").arg(pg.dir.join("data")).args([
            "-A",
            "trust",
            "-U",
            "crops",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        run_ok(initdb);
        let options = format!(
            "-c listen_addresses='' -k {} -c fsync={} -c max_connections=200",
            pg.dir.display(),
            if fsync { "on" } else { "off" }
        );
        let mut start = as_pg_owner(&pg.bin.join("pg_ctl"));
        start
            .arg("start")
            .arg("-D")
            .arg(pg.dir.join("data"))
            .arg("-l")
            .arg(pg.dir.join("log"))
            .args(["-w", "-s", "-o", &options]);
        run_ok(start);
        pg.psql("postgres", "CREATE DATABASE crops");
        pg
    }

    /// Run `sql` with psql in database `db`; its output, unaligned and
    /// without headers (`-At`).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let mut psql = Command::new(self.bin.join("psql"));
        psql.args(["-X", "-q", "-At", "-h"])
            .arg(&self.dir)
            .args(["-U", "crops", "-d", db, "-c", sql]);
        run_ok(psql)
    }

    /// The postmaster's process id (the first line of `postmaster.pid`).
    pub fn pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.dir.join("data/postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// The URL every replica is given.
    pub fn url(&self) -> String {
        format!(
            "postgres://crops@localhost/crops?host={}",
            self.dir.display()
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = as_pg_owner(&self.bin.join("pg_ctl"))
            .arg("stop")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-s"])
            .output();
    }
}

/// What replicas serve: `tls` with the CA appended to the certificate
/// file. Replicas verify each other against the public roots and their own
/// certificate file: with a private CA, that file carries the CA too.
pub fn chained(dir: &TestDir, tls: &Tls) -> Tls {
    let chain = dir.path("chain.pem");
    let pem = [&tls.cert, &tls.ca].map(|p| std::fs::read_to_string(p).unwrap());
    std::fs::write(&chain, pem.concat()).unwrap();
    Tls {
        ca: tls.ca.clone(),
        cert: chain,
        key: tls.key.clone(),
    }
}

/// HAProxy's configuration: TCP to the replicas, least connections, a
/// TLS check of `/readyz` every 500 ms (down after two failures), at most
/// `maxconn` connections (HAProxy takes two descriptors for each).
fn haproxy_config(port: u16, backends: &[u16], maxconn: u32) -> String {
    let mut cfg = format!(
        "global\n    maxconn {maxconn}\n\
         defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 1h\n    \
         timeout server 1h\n    retries 3\n    option redispatch\n\
         frontend crops\n    bind 127.0.0.1:{port}\n    default_backend replicas\n\
         backend replicas\n    balance leastconn\n    option httpchk GET /readyz\n    \
         http-check expect status 200\n    \
         default-server check check-ssl verify none inter 500ms fall 2 rise 2\n"
    );
    for (i, p) in backends.iter().enumerate() {
        cfg.push_str(&format!("    server r{} 127.0.0.1:{p}\n", i + 1));
    }
    cfg
}

/// Three replicas on one PostgreSQL behind one HAProxy.
pub struct Replicas {
    /// The balancer, as the CLI, agents and [`Replicas::api`] reach it.
    pub front: Orchestrator,
    pub api: Https,
    /// r1, r2, r3, each reachable at its own port too.
    pub replicas: Vec<Orchestrator>,
    haproxy: Option<Child>,
    _pg: Postgres,
    pub tls: Tls,
    pub dir: TestDir,
}

impl Replicas {
    pub fn start(name: &str) -> Self {
        let dir = TestDir::new(name);
        let tls = Tls::new(&dir);
        let pg = Postgres::start(dir.path("pg"));
        let served = chained(&dir, &tls);
        let replicas: Vec<Orchestrator> = (1..=3)
            .map(|i| {
                let args = [
                    "--database".to_string(),
                    pg.url(),
                    "--replica-id".to_string(),
                    format!("r{i}"),
                ];
                Orchestrator::start_named(&dir, &served, &format!("r{i}"), &args)
            })
            .collect();
        let ports: Vec<u16> = replicas.iter().map(|r| r.port).collect();
        let (haproxy, port) = start_haproxy(&dir.0, &ports, 2000);
        let front = Orchestrator::behind(port, &tls, dir.path("haproxy.log"));
        let api = Https::new(&tls.ca, port, &front.admin_token);
        let r = Replicas {
            front,
            api,
            replicas,
            haproxy: Some(haproxy),
            _pg: pg,
            tls,
            dir,
        };
        // Every replica up in the balancer's eyes before anyone uses it.
        wait_until(
            "HAProxy to see the three replicas up",
            Duration::from_secs(30),
            || r.replicas_up().then_some(()),
        );
        r
    }

    /// Whether each replica answers `/readyz` through its own port.
    fn replicas_up(&self) -> bool {
        self.replicas.iter().all(|o| {
            Https::new(&o.ca, o.port, &o.admin_token)
                .try_request("GET", "/readyz", None)
                .is_ok_and(|a| a.status == 200)
        }) && self
            .api
            .try_request("GET", "/readyz", None)
            .is_ok_and(|a| a.status == 200)
    }

    /// `crops_workers_connected` as replica `i` itself reports it.
    pub fn connected_on(&self, i: usize) -> u64 {
        let o = &self.replicas[i];
        let a = Https::new(&o.ca, o.port, &o.admin_token).get("/metrics");
        let text = a.body.as_str().unwrap_or_default().to_string();
        text.lines()
            .find_map(|l| l.strip_prefix("crops_workers_connected "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no crops_workers_connected in {text}")) as u64
    }
}

/// HAProxy before replicas (its [`haproxy_config`]), on a port the kernel
/// just handed out.
pub fn start_haproxy(dir: &Path, backends: &[u16], maxconn: u32) -> (Child, u16) {
    run_haproxy(dir, |port| haproxy_config(port, backends, maxconn))
}

/// HAProxy with the configuration `config` gives for a port the kernel
/// just handed out (tried again if another process took it in between);
/// in the foreground, as our child, its configuration and log in `dir`.
pub fn run_haproxy(dir: &Path, config: impl Fn(u16) -> String) -> (Child, u16) {
    for _ in 0..5 {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(&cfg, config(port)).unwrap();
        let log = std::fs::File::create(dir.join("haproxy.log")).unwrap();
        let mut child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawning haproxy (run `make deps`, which installs it)");
        let listening = wait_until("HAProxy to listen", Duration::from_secs(10), || {
            if child.try_wait().unwrap().is_some() {
                return Some(false);
            }
            std::net::TcpStream::connect(("127.0.0.1", port))
                .is_ok()
                .then_some(true)
        });
        if listening {
            return (child, port);
        }
    }
    panic!(
        "HAProxy would not start:\n{}",
        std::fs::read_to_string(dir.join("haproxy.log")).unwrap_or_default()
    );
}

impl Drop for Replicas {
    fn drop(&mut self) {
        if let Some(mut c) = self.haproxy.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
