//! The end-to-end rig: real binaries as child processes, a TLS CA per test,
//! bounded polling, and logs dumped when a test fails.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub use crate::agent::{Agent, AgentCmd, AgentKind};

/// The workspace root (this crate lives in `tests/`).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A binary named by an environment variable, else found in the target dir.
/// A missing binary fails the test with what to run, never skips it.
fn binary(var: &str, fallback: &str) -> PathBuf {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(fallback));
    assert!(
        path.is_file(),
        "{} not found (set {var} or run `make test`, which builds it)",
        path.display()
    );
    path
}

pub fn orchestrator_bin() -> PathBuf {
    binary("CROPS_ORCHESTRATOR_BIN", "target/debug/crops-orchestrator")
}

/// The static musl agent, as the issue asks the end-to-end tests to run.
pub fn agent_bin() -> PathBuf {
    binary(
        "CROPS_AGENT_BIN",
        "target/x86_64-unknown-linux-musl/agent/crops-agent",
    )
}

pub fn agent_arm64_bin() -> PathBuf {
    binary(
        "CROPS_AGENT_ARM64_BIN",
        "target/aarch64-unknown-linux-musl/agent/crops-agent",
    )
}

/// Podman must be here: a test that needs it fails loudly when it is not.
pub fn require_podman() {
    let out = Command::new("podman").arg("--version").output();
    match out {
        Ok(o) if o.status.success() => {}
        other => panic!("podman is required for this test and is not usable: {other:?}"),
    }
}

/// The project-owned containers.conf, unless the caller chose one.
pub fn containers_conf() -> OsString {
    std::env::var_os("CONTAINERS_CONF")
        .unwrap_or_else(|| root().join("tests/podman/containers.conf").into_os_string())
}

/// A scratch directory per test, kept when the test fails.
pub struct TestDir(pub PathBuf);

impl TestDir {
    pub fn new(name: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "crops-e2e-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TestDir(dir)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test files kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A CA and a server certificate for 127.0.0.1 and localhost, as PEM files.
pub struct Tls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Tls {
    pub fn new(dir: &TestDir) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Crops test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        let tls = Tls {
            ca: dir.path("ca.pem"),
            cert: dir.path("server.pem"),
            key: dir.path("server.key"),
        };
        std::fs::write(&tls.ca, ca.pem()).unwrap();
        std::fs::write(&tls.cert, leaf.pem()).unwrap();
        std::fs::write(&tls.key, leaf_key.serialize_pem()).unwrap();
        tls
    }
}

/// Poll `f` every 50 ms until it yields, or fail after `timeout` naming `what`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Print a command's whole story; used when a command's result surprises us.
pub fn describe(cmd: &Command, out: &Output) -> String {
    format!(
        "command: {cmd:?}\nstatus: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Run to completion and insist on success.
pub fn run_ok(mut cmd: Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    assert!(out.status.success(), "{}", describe(&cmd, &out));
    String::from_utf8(out.stdout).unwrap()
}

pub(crate) fn tail(path: &Path, max: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let start = text.len().saturating_sub(max);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    text[start..].to_string()
}

/// A running `crops-orchestrator serve` with TLS.
pub struct Orchestrator {
    child: Option<Child>,
    pub port: u16,
    pub url: String,
    pub data: PathBuf,
    pub log: PathBuf,
    pub admin_token: String,
    pub ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    /// More `serve` flags (a shared database, a replica id).
    args: Vec<String>,
}

/// Heartbeats every second in tests, so "advances" and "offline" are quick;
/// benchmarks set `CROPS_E2E_HEARTBEAT_SECS=10`, the product's interval.
pub fn heartbeat_secs() -> u64 {
    std::env::var("CROPS_E2E_HEARTBEAT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

impl Orchestrator {
    pub fn start(dir: &TestDir, tls: &Tls) -> Self {
        Self::start_named(dir, tls, "orchestrator", &[])
    }

    /// One of several orchestrators in `dir`: its data in `dir/NAME-data`,
    /// its log `dir/NAME.log`, `args` added to `serve`.
    pub fn start_named(dir: &TestDir, tls: &Tls, name: &str, args: &[String]) -> Self {
        let (data, log) = match name {
            "orchestrator" => (dir.path("data"), dir.path("orchestrator.log")),
            _ => (
                dir.path(&format!("{name}-data")),
                dir.path(&format!("{name}.log")),
            ),
        };
        let mut o = Self::behind(0, tls, log);
        (o.data, o.args) = (data, args.to_vec());
        o.spawn();
        o
    }

    /// Not a process of ours: the orchestrators behind a balancer at `port`,
    /// for the CLI and agents to reach them there.
    pub fn behind(port: u16, tls: &Tls, log: PathBuf) -> Self {
        Orchestrator {
            child: None,
            port,
            url: format!("https://127.0.0.1:{port}"),
            data: PathBuf::new(),
            log,
            admin_token: "crops_adm_e2e_test_token_0123456789abcdef".into(),
            ca: tls.ca.clone(),
            cert: tls.cert.clone(),
            key: tls.key.clone(),
            args: vec![],
        }
    }

    /// Start (again) on the same data dir and, after the first start, the same port.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "orchestrator already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut child = Command::new(orchestrator_bin())
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data")
            .arg(&self.data)
            .arg("--tls-cert")
            .arg(&self.cert)
            .arg("--tls-key")
            .arg(&self.key)
            .arg("--heartbeat-secs")
            .arg(heartbeat_secs().to_string())
            .args(&self.args)
            .env("CROPS_ADMIN_TOKEN", &self.admin_token)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawning crops-orchestrator");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                    "orchestrator never printed its address:\n{}",
                    tail(&self.log, 4000)
                )
            });
        let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
        assert!(addr.starts_with("https://"), "TLS was asked for: {addr}");
        self.port = port;
        self.url = format!("https://127.0.0.1:{port}");
        self.child = Some(child);
    }

    /// `kill -9`: no chance to flush or say goodbye.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("orchestrator not running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// An admin subcommand of the CLI, against this orchestrator.
    pub fn cli(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(orchestrator_bin());
        cmd.args(args)
            .arg("--url")
            .arg(&self.url)
            .arg("--admin-token")
            .arg(&self.admin_token)
            .arg("--ca-file")
            .arg(&self.ca)
            .env("NO_COLOR", "1");
        cmd
    }

    pub fn create_tenant(&self, name: &str) -> String {
        run_ok(self.cli(&["tenant", "create", "--name", name]))
            .trim()
            .to_string()
    }

    pub fn join_token(&self, tenant: &str) -> String {
        run_ok(self.cli(&["join-token", "create", "--tenant", tenant]))
            .trim()
            .to_string()
    }

    /// `GET /v1/workers`, through the CLI's `--json`.
    pub fn workers(&self) -> Vec<Value> {
        let text = run_ok(self.cli(&["worker", "list", "--json"]));
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        match v {
            Value::Array(a) => a,
            Value::Object(mut o) => match o.remove("workers") {
                Some(Value::Array(a)) => a,
                other => panic!("no workers array: {other:?}"),
            },
            other => panic!("unexpected worker list: {other}"),
        }
    }

    pub fn worker(&self, id: &str) -> Option<Value> {
        self.workers().into_iter().find(|w| w["id"] == id)
    }

    /// Wait until worker `id` is online and satisfies `pred`.
    pub fn wait_worker(&self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        wait_until(what, Duration::from_secs(60), || {
            self.worker(id)
                .filter(|w| w["status"] == "online" && pred(w))
        })
    }
}

impl Drop for Orchestrator {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- orchestrator log ---\n{}", tail(&self.log, 8000));
        }
    }
}

/// The machine's facts as the agent must report them.
pub fn host_memory_total() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let line = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

pub fn host_cpu_count() -> u64 {
    std::thread::available_parallelism().unwrap().get() as u64
}
