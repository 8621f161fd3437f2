//! A real PostgreSQL server for the store tests, never a mock: one per test
//! process, started on first use with Debian's binaries (`initdb` and
//! `pg_ctl` from the newest `/usr/lib/postgresql/*/bin`, installed by
//! `make deps`) in a fresh temporary directory, listening on a Unix socket
//! only (no TCP port to collide on), trust authentication for the `crops`
//! role. Each test asks for its own fresh database ([`database`]). The
//! server is stopped (`pg_ctl stop -m immediate`) and its directory removed
//! when the test process exits, from an `atexit` handler.
//!
//! initdb refuses to run as root: as root, the server's commands run as the
//! `postgres` user (`runuser`) on a directory it owns.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The role every test connects as (trust authentication on the socket).
const ROLE: &str = "crops";

/// The running server of this test process.
pub struct Server {
    bin: PathBuf,
    /// Owns `data/` (the cluster), the socket and `log`.
    dir: PathBuf,
}

static SERVER: OnceLock<Server> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// The newest installed PostgreSQL's `bin` directory.
fn binaries() -> PathBuf {
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
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): \
             run `make deps` (it installs Debian's postgresql package)"
        ),
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `program` run as the server's owner: `postgres` when we are root.
fn as_owner(program: &Path) -> Command {
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what} ({cmd:?}): {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{what} failed ({}): {text}",
        out.status
    );
    text
}

extern "C" fn stop_at_exit() {
    if let Some(server) = SERVER.get() {
        let _ = as_owner(&server.bin.join("pg_ctl"))
            .arg("stop")
            .arg("-D")
            .arg(server.dir.join("data"))
            .args(["-m", "immediate", "-s"])
            .output();
        let _ = std::fs::remove_dir_all(&server.dir);
    }
}

impl Server {
    fn start() -> Self {
        Self::start_in(std::env::temp_dir().join(format!("crops-pg-{}", std::process::id())))
    }

    /// initdb and start a server owning `dir` (emptied first).
    fn start_in(dir: PathBuf) -> Self {
        let bin = binaries();
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the PostgreSQL test directory");
        if is_root() {
            run(
                Command::new("chown").arg("postgres:").arg(&dir),
                "chown the PostgreSQL test directory",
            );
        }
        let server = Self { bin, dir };
        run(
            as_owner(&server.bin.join("initdb"))
                .arg("-D")
                .arg(server.dir.join("data"))
                .args([
                    "-A",
                    "trust",
                    "-U",
                    ROLE,
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ]),
            "initdb",
        );
        server.pg_start();
        server
    }

    /// Start the initialised server (again).
    pub fn pg_start(&self) {
        // Not durable against a power cut (fsync off): a test server's
        // crash safety is not under test, the store's transactions are.
        let options = format!(
            "-c listen_addresses='' -k {} -c fsync=off -c max_connections=300",
            self.dir.display()
        );
        run(
            as_owner(&self.bin.join("pg_ctl"))
                .arg("start")
                .arg("-D")
                .arg(self.dir.join("data"))
                .arg("-l")
                .arg(self.dir.join("log"))
                .args(["-w", "-s", "-o", &options]),
            "pg_ctl start",
        );
    }

    /// Stop the server as an operator restarting it would (`-m fast`:
    /// sessions are ended, committed work is kept).
    pub fn pg_stop(&self) {
        run(
            as_owner(&self.bin.join("pg_ctl"))
                .arg("stop")
                .arg("-D")
                .arg(self.dir.join("data"))
                .args(["-m", "fast", "-w", "-s"]),
            "pg_ctl stop",
        );
    }

    /// The socket's directory.
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// The URL of database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://{ROLE}@localhost/{db}?host={}",
            self.dir.display()
        )
    }

    /// Run `sql` in database `db` with `psql`; its output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        run(
            Command::new(self.bin.join("psql"))
                .arg("-X")
                .args(["-v", "ON_ERROR_STOP=1", "-qAt", "-h"])
                .arg(&self.dir)
                .args(["-U", ROLE, "-d", db, "-c", sql]),
            "psql",
        )
    }
}

/// This process's server, started on first use.
pub fn server() -> &'static Server {
    SERVER.get_or_init(|| {
        let server = Server::start();
        // SAFETY: registers a plain extern "C" function with no arguments.
        let registered = unsafe { libc::atexit(stop_at_exit) };
        assert_eq!(registered, 0, "atexit refused the PostgreSQL stop handler");
        server
    })
}

/// A server of one test's own, for faults of the server itself (a
/// restart): stopped and removed when dropped.
pub struct Own(Server);

impl Own {
    pub fn start(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("crops-pg-{}-{name}", std::process::id()));
        Self(Server::start_in(dir))
    }

    /// A fresh database on this server: its URL.
    pub fn database(&self) -> String {
        self.0.psql("postgres", "CREATE DATABASE t");
        self.0.url("t")
    }
}

impl std::ops::Deref for Own {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.0
    }
}

impl Drop for Own {
    fn drop(&mut self) {
        let _ = as_owner(&self.0.bin.join("pg_ctl"))
            .arg("stop")
            .arg("-D")
            .arg(self.0.dir.join("data"))
            .args(["-m", "immediate", "-s"])
            .output();
        let _ = std::fs::remove_dir_all(&self.0.dir);
    }
}

/// A fresh, empty database on this process's server: its URL.
pub fn database() -> String {
    let server = server();
    let name = format!("t{}", NEXT_DB.fetch_add(1, Ordering::Relaxed));
    server.psql("postgres", &format!("CREATE DATABASE {name}"));
    server.url(&name)
}

/// The database name in a URL made by [`database`].
pub fn name_of(url: &str) -> &str {
    let path = url.split_once('?').map_or(url, |(p, _)| p);
    path.rsplit_once('/').map_or(path, |(_, db)| db)
}

#[test]
fn the_rig_starts_a_real_server_and_hands_out_fresh_databases() {
    let (a, b) = (database(), database());
    assert_ne!(a, b);
    let server = server();
    let version = server.psql(name_of(&a), "SHOW server_version_num");
    assert!(
        version.trim().parse::<u32>().is_ok_and(|v| v >= 100_000),
        "{version}"
    );
    assert!(server.socket_dir().join(".s.PGSQL.5432").exists());
}
