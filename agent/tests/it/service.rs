//! `crops-agent service install|status|uninstall`, the binary end to end,
//! with recording fakes of `systemctl` and `loginctl` first on `PATH` and a
//! scratch unit directory; and, without fakes, what this machine's real
//! `systemctl` says (the test hosts run no systemd: the clear refusal).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::scratch_dir;

const AGENT: &str = env!("CARGO_BIN_EXE_crops-agent");

/// A fake `systemctl` that answers as a running systemd would, judging
/// "enabled" and "active" by the unit file in `$FAKE_UNIT_DIR`.
const SYSTEMCTL: &str = r#"#!/bin/sh
echo "systemctl $*" >>"$FAKE_LOG"
[ "$1" = --user ] && shift
unit="$FAKE_UNIT_DIR/crops-agent.service"
case "$1" in
  is-system-running) echo "${FAKE_STATE:-running}"; [ "${FAKE_STATE:-running}" = running ] ;;
  is-enabled) if [ -e "$unit" ]; then echo enabled; else echo "Failed to get unit file state" >&2; exit 1; fi ;;
  is-active) if [ -e "$unit" ]; then echo active; else echo inactive; exit 3; fi ;;
esac
"#;

const LOGINCTL: &str = "#!/bin/sh\necho \"loginctl $*\" >>\"$FAKE_LOG\"\n";

/// A scratch home with a worker config, fakes on `PATH` and a call log.
struct Host {
    dir: PathBuf,
    config: PathBuf,
    unit_dir: PathBuf,
    log: PathBuf,
    bin: PathBuf,
}

impl Host {
    fn new(tag: &str) -> Self {
        let dir = scratch_dir(tag);
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for (name, script) in [("systemctl", SYSTEMCTL), ("loginctl", LOGINCTL)] {
            let path = bin.join(name);
            std::fs::write(&path, script).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let config = dir.join("home").join(".cropscode").join("worker.json");
        agent::config::Config {
            worker_id: "w-1".into(),
            tenant_id: "t-1".into(),
            tenant_name: "home".into(),
            url: "wss://orch.example:7443/v1/agent".into(),
            credential: "crops_wkr_secret".into(),
            name: None,
            ca_file: None,
            mode: None,
        }
        .save(&config)
        .unwrap();
        let log = dir.join("calls.log");
        std::fs::write(&log, "").unwrap();
        let unit_dir = dir.join("units");
        Self {
            dir,
            config,
            unit_dir,
            log,
            bin,
        }
    }

    /// `crops-agent service args…` with the fakes first on `PATH`, no
    /// `CROPS_*` but `extra`, in `self.dir`.
    fn agent(&self, args: &[&str], extra: &[(&str, &str)], user: Option<u32>) -> Output {
        let path = format!("{}:{}", self.bin.display(), std::env::var("PATH").unwrap());
        let mut cmd = Command::new(AGENT);
        cmd.arg("service")
            .args(args)
            .current_dir(&self.dir)
            .env_clear()
            .env("PATH", path)
            .env("HOME", self.dir.join("home"))
            .env("FAKE_LOG", &self.log)
            .env("FAKE_UNIT_DIR", &self.unit_dir)
            .envs(extra.iter().copied());
        if let Some(uid) = user {
            cmd.uid(uid).gid(uid);
        }
        cmd.output().unwrap()
    }

    /// The calls the fakes saw since the last look.
    fn calls(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap();
        std::fs::write(&self.log, "").unwrap();
        text.lines().map(str::to_owned).collect()
    }

    fn unit_file(&self) -> PathBuf {
        self.unit_dir.join("crops-agent.service")
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The command's story, for a failed assertion.
fn story(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid() == 0
}

#[test]
fn install_as_root_writes_a_system_unit_then_status_and_uninstall() {
    assert!(
        is_root(),
        "this test installs a system unit: run it as root (make test does)"
    );
    let b = Host::new("service-root");
    let unit_dir = b.unit_dir.to_str().unwrap();
    let out = b.agent(
        &[
            "install",
            "--config",
            "home/.cropscode/worker.json",
            "--unit-dir",
            unit_dir,
            "--label",
            "room=the attic",
        ],
        &[
            ("CROPS_DATA_DIR", "data"),
            ("CROPS_CREDENTIAL", "crops_wkr_from_env"),
            ("HTTPS_PROXY", "http://proxy.lan:3128"),
            ("RUST_LOG", "agent=debug"),
        ],
        None,
    );
    assert!(out.status.success(), "{}", story(&out));
    assert!(
        stdout(&out).contains("started crops-agent.service"),
        "{}",
        story(&out)
    );
    let config = b.config.display();
    let data = b.dir.join("data");
    assert_eq!(
        std::fs::read_to_string(b.unit_file()).unwrap(),
        format!(
            "# Written by `crops-agent service install`; `crops-agent service uninstall` removes it.
[Unit]
Description=Crops agent: development containers for a Crops orchestrator
After=network-online.target
Wants=network-online.target

[Service]
Environment=\"HTTPS_PROXY=http://proxy.lan:3128\"
Environment=\"RUST_LOG=agent=debug\"
ExecStart={AGENT} run --config {config} --data-dir {} --label \"room=the attic\"
Restart=on-failure
RestartSec=5
KillMode=process

[Install]
WantedBy=multi-user.target
",
            data.display()
        )
    );
    let mode = std::fs::metadata(b.unit_file())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644);
    assert_eq!(
        b.calls(),
        [
            "systemctl is-system-running",
            "systemctl daemon-reload",
            "systemctl enable crops-agent.service",
            "systemctl restart crops-agent.service",
        ]
    );
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(b.unit_file())
        .output()
        .unwrap();
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "{}",
        story(&verify)
    );

    let out = b.agent(&["status", "--unit-dir", unit_dir], &[], None);
    assert_eq!(out.status.code(), Some(0), "{}", story(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "unit file: {} (installed: yes)\nenabled: enabled\nactive: active\n",
            b.unit_file().display()
        )
    );
    assert_eq!(
        b.calls()[1..],
        [
            "systemctl is-enabled crops-agent.service",
            "systemctl is-active crops-agent.service"
        ]
    );

    let out = b.agent(&["uninstall", "--unit-dir", unit_dir], &[], None);
    assert!(out.status.success(), "{}", story(&out));
    assert!(!b.unit_file().exists());
    assert_eq!(
        b.calls(),
        [
            "systemctl is-system-running",
            "systemctl disable --now crops-agent.service",
            "systemctl daemon-reload",
        ]
    );
    // Again: nothing to do, and said so.
    let out = b.agent(&["uninstall", "--unit-dir", unit_dir], &[], None);
    assert!(out.status.success(), "{}", story(&out));
    assert!(stdout(&out).contains("is not installed"), "{}", story(&out));
    assert_eq!(b.calls(), Vec::<String>::new());

    let out = b.agent(&["status", "--unit-dir", unit_dir], &[], None);
    assert_eq!(out.status.code(), Some(3), "{}", story(&out));
    assert!(
        stdout(&out).contains(
            "(installed: no)\nenabled: Failed to get unit file state\nactive: inactive\n"
        ),
        "{}",
        story(&out)
    );
    assert!(out.stderr.is_empty(), "{}", story(&out));
}

#[test]
fn install_as_a_user_writes_a_user_unit_and_enables_lingering() {
    // Root tries it as nobody; anyone else as themselves.
    let user = is_root().then_some(65534);
    let b = Host::new("service-user");
    if let Some(uid) = user {
        for entry in walk(&b.dir) {
            std::os::unix::fs::chown(&entry, Some(uid), Some(uid)).unwrap();
        }
    }
    let out = b.agent(
        &["install"],
        &[("XDG_CONFIG_HOME", b.dir.join("xdg").to_str().unwrap())],
        user,
    );
    assert!(out.status.success(), "{}", story(&out));
    let uid = user.unwrap_or_else(|| {
        std::fs::metadata(&b.dir)
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
            .unwrap()
    });
    let unit_file = b.dir.join("xdg/systemd/user/crops-agent.service");
    let text = std::fs::read_to_string(&unit_file).unwrap();
    assert!(
        text.contains(&format!(
            "\nExecStart={AGENT} run --config {}\n",
            b.config.display()
        )),
        "{text}"
    );
    assert!(
        text.ends_with("WantedBy=default.target\n") && !text.contains("network-online"),
        "{text}"
    );
    assert_eq!(
        b.calls(),
        [
            "systemctl is-system-running".to_owned(),
            format!("loginctl enable-linger {uid}"),
            "systemctl --user daemon-reload".into(),
            "systemctl --user enable crops-agent.service".into(),
            "systemctl --user restart crops-agent.service".into(),
        ]
    );
    let out = b.agent(
        &["uninstall"],
        &[("XDG_CONFIG_HOME", b.dir.join("xdg").to_str().unwrap())],
        user,
    );
    assert!(out.status.success(), "{}", story(&out));
    assert!(!unit_file.exists());
    assert_eq!(
        b.calls()[1..],
        [
            "systemctl --user disable --now crops-agent.service",
            "systemctl --user daemon-reload"
        ]
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut all = vec![dir.to_owned()];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all.extend(walk(&path));
        } else {
            all.push(path);
        }
    }
    all
}

#[test]
fn install_without_a_worker_config_says_enroll_first_and_writes_nothing() {
    let b = Host::new("service-noconfig");
    let unit_dir = b.unit_dir.to_str().unwrap();
    let out = b.agent(
        &[
            "install",
            "--config",
            "/nonexistent/worker.json",
            "--unit-dir",
            unit_dir,
        ],
        &[],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", story(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "no worker config at /nonexistent/worker.json; run `crops-agent enroll` first"
        ),
        "{}",
        story(&out)
    );
    // A label `run` would refuse is refused here too, before anything runs.
    let out = b.agent(
        &["install", "--unit-dir", unit_dir, "--label", "no-equals"],
        &[],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", story(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid label \"no-equals\""),
        "{}",
        story(&out)
    );
    assert!(!b.unit_dir.exists());
    assert_eq!(b.calls(), Vec::<String>::new());
}

#[test]
fn without_systemd_status_and_install_say_so() {
    let b = Host::new("service-nosystemd");
    let unit_dir = b.unit_dir.to_str().unwrap();
    let only_fakes = b.bin.to_str().unwrap();
    // What systemd 252's systemctl answers in a container without it; then
    // no systemctl at all (Alpine, OpenWrt, most NAS firmware).
    let offline = [("FAKE_STATE", "offline")];
    let no_systemctl = [("PATH", only_fakes)];
    for (found, extra) in [
        ("`systemctl is-system-running` says \"offline\"", &offline),
        ("no systemctl on PATH", &no_systemctl),
    ] {
        if extra == &no_systemctl {
            std::fs::remove_file(b.bin.join("systemctl")).unwrap();
        }
        let want = format!(
            "systemd is not running on this machine ({found}): start `crops-agent run` another way"
        );
        let out = b.agent(&["status", "--unit-dir", unit_dir], extra, None);
        assert_eq!(out.status.code(), Some(3), "{}", story(&out));
        assert!(stdout(&out).contains(&want), "{}", story(&out));
        let out = b.agent(&["install", "--unit-dir", unit_dir], extra, None);
        assert_eq!(out.status.code(), Some(1), "{}", story(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(&want),
            "{}",
            story(&out)
        );
        assert!(
            !b.unit_file().exists(),
            "nothing is written without systemd"
        );
    }
}

/// This machine's own systemctl, no fakes: on the test hosts (containers,
/// no systemd as PID 1) status says so and exits 3; on a host that runs
/// systemd it reports the (absent) unit instead.
#[test]
fn status_with_the_real_systemctl() {
    let dir = scratch_dir("service-real");
    let out = Command::new(AGENT)
        .args(["service", "status", "--unit-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", story(&out));
    let text = stdout(&out);
    if Path::new("/run/systemd/system").exists() {
        assert!(text.contains("\nactive: inactive\n"), "{}", story(&out));
    } else {
        assert!(
            text.contains("systemd is not running on this machine (`systemctl is-system-running` says \"offline\")")
                || text.contains("systemd is not running on this machine (no systemctl on PATH)"),
            "{}",
            story(&out)
        );
    }
}
