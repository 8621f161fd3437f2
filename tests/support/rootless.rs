//! The unprivileged user the suite runs rootless agents as, made ready
//! once per test process: `crops-rootless` (created with `useradd -m` if
//! missing), a subordinate uid and gid range in `/etc/subuid` and
//! `/etc/subgid` (added if missing), its runtime directory
//! `/run/user/UID` (0700, its own), Podman's vfs storage driver in its
//! `~/.config/containers/storage.conf`, the project's containers.conf
//! copied into its home (the checkout may not be readable to it), the
//! agent under test copied where it can run it, and the test image
//! imported into its storage by `tests/podman/image.sh` run as the user.
//!
//! Several test processes (the suite, a benchmark, a second `cargo test`)
//! may prepare at once: each step is idempotent and the whole preparation
//! runs under an exclusive lock on `/tmp/crops-rootless.lock`. The rig
//! needs root, as the rest of the suite does; Debian's uidmap and
//! slirp4netns come from `make deps`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::harness::{agent_bin, describe, root, run_ok};

/// The user's name.
pub const NAME: &str = "crops-rootless";
/// The first subordinate id given when the user has none.
const SUB_START: u64 = 100_000;
const SUB_COUNT: u64 = 65_536;

/// The prepared user: who it is and where its things are.
#[derive(Debug)]
pub struct User {
    pub name: &'static str,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    /// `/run/user/UID`, Podman's runtime directory.
    pub runtime_dir: PathBuf,
    /// The project's containers.conf, as the user can read it.
    pub containers_conf: PathBuf,
    /// The agent under test, where the user can run it (and rootless
    /// Podman can bind-mount it as the PTY helper).
    pub agent: PathBuf,
}

/// The user, prepared on first use in this process.
pub fn user() -> &'static User {
    static USER: OnceLock<User> = OnceLock::new();
    USER.get_or_init(prepare)
}

impl User {
    /// Run `cmd` as this user, in its home, with the environment rootless
    /// Podman needs (and nothing of root's that points into `/root`).
    /// std drops root's supplementary groups when it sets the uid.
    pub fn apply<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        cmd.uid(self.uid)
            .gid(self.gid)
            .current_dir(&self.home)
            .env("HOME", &self.home)
            .env("USER", self.name)
            .env("LOGNAME", self.name)
            .env("XDG_RUNTIME_DIR", &self.runtime_dir)
            .env("CONTAINERS_CONF", &self.containers_conf)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_DATA_HOME")
    }

    /// `podman ARGS` as this user.
    pub fn podman(&self) -> Command {
        let mut cmd = Command::new("podman");
        self.apply(&mut cmd);
        cmd
    }

    /// Create `dir` (and its parents) and give `dir` itself to the user, so
    /// an agent running as it can write its config and data there.
    pub fn own_dir(&self, dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        chown(dir, Some(self.uid), Some(self.gid)).unwrap();
    }
}

fn prepare() -> User {
    assert!(
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0,
        "the rootless tests prepare the user {NAME}: run the suite as root"
    );
    let file = File::create("/tmp/crops-rootless.lock").expect("the rootless rig's lock file");
    let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("locking /tmp/crops-rootless.lock: {e}"));
    let (uid, gid, home) = account();
    for file in ["/etc/subuid", "/etc/subgid"] {
        subordinate_ids(Path::new(file));
    }
    let runtime_dir = PathBuf::from(format!("/run/user/{uid}"));
    make_dir(&runtime_dir, 0o700, uid, gid);
    let config = home.join(".config/containers");
    for dir in [home.join(".config"), config.clone()] {
        make_dir(&dir, 0o755, uid, gid);
    }
    write_owned(
        &config.join("storage.conf"),
        b"# Written by the Crops test rig: no fuse-overlayfs here.\n[storage]\ndriver = \"vfs\"\n",
        uid,
        gid,
    );
    let conf = std::fs::read(crate::harness::containers_conf()).unwrap();
    let containers_conf = home.join("crops-containers.conf");
    write_owned(&containers_conf, &conf, uid, gid);
    let agent = copy_agent(&home, uid, gid);
    let user = User {
        name: NAME,
        uid,
        gid,
        home,
        runtime_dir,
        containers_conf,
        agent,
    };
    import_image(&user);
    drop(lock);
    user
}

/// The user's uid, gid and home, creating the account if missing.
fn account() -> (u32, u32, PathBuf) {
    let getent = || {
        Command::new("getent")
            .args(["passwd", NAME])
            .output()
            .unwrap()
    };
    let mut out = getent();
    if !out.status.success() {
        let mut add = Command::new("useradd");
        add.args(["-m", "-s", "/bin/sh", NAME]);
        run_ok(add);
        out = getent();
    }
    let line = String::from_utf8(out.stdout).unwrap();
    let f: Vec<&str> = line.trim().split(':').collect();
    assert!(f.len() >= 7, "getent passwd {NAME}: {line:?}");
    (
        f[2].parse().unwrap(),
        f[3].parse().unwrap(),
        PathBuf::from(f[5]),
    )
}

/// Give the user a range in `file` unless it has one: the next free
/// [`SUB_COUNT`] ids at or above [`SUB_START`].
fn subordinate_ids(file: &Path) {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut next = SUB_START;
    for line in text.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f[0] == NAME {
            return;
        }
        if let [_, start, count] = f[..] {
            if let (Ok(s), Ok(c)) = (start.parse::<u64>(), count.parse::<u64>()) {
                next = next.max(s + c);
            }
        }
    }
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .unwrap();
    let sep = if text.is_empty() || text.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    writeln!(f, "{sep}{NAME}:{next}:{SUB_COUNT}").unwrap();
}

fn make_dir(dir: &Path, mode: u32, uid: u32, gid: u32) {
    std::fs::create_dir_all(dir).unwrap();
    chown(dir, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Write `path` atomically (a temporary file renamed over it), owned by the user.
fn write_owned(path: &Path, content: &[u8], uid: u32, gid: u32) {
    if std::fs::read(path).is_ok_and(|old| old == content) {
        return;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, content).unwrap();
    chown(&tmp, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The agent under test in the user's home, named by its size and mtime
/// so a rebuilt agent gets a new file and a running one is never
/// overwritten (a container's PTY helper mount names the file).
fn copy_agent(home: &Path, uid: u32, gid: u32) -> PathBuf {
    let src = agent_bin();
    let meta = std::fs::metadata(&src).unwrap();
    let mtime = meta
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = home.join(".cache/crops-e2e");
    for d in [home.join(".cache"), dir.clone()] {
        make_dir(&d, 0o755, uid, gid);
    }
    let dst = dir.join(format!("crops-agent-{}-{mtime}", meta.len()));
    if !dst.is_file() {
        let tmp = dst.with_extension(format!("tmp{}", std::process::id()));
        std::fs::copy(&src, &tmp).unwrap();
        chown(&tmp, Some(uid), Some(gid)).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&tmp, &dst).unwrap();
    }
    dst
}

/// `tests/podman/image.sh` as the user (fed on stdin: the checkout may
/// not be readable to it); it does nothing when the image is there.
fn import_image(user: &User) {
    let script = std::fs::read(root().join("tests/podman/image.sh")).unwrap();
    let mut cmd = Command::new("bash");
    user.apply(&mut cmd)
        .arg("-s")
        .env("CROPS_TEST_IMAGE", crate::fleet::test_image());
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawning image.sh as the rootless user");
    child.stdin.take().unwrap().write_all(&script).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "importing the test image as {NAME}:\n{}",
        describe(&cmd, &out)
    );
}
