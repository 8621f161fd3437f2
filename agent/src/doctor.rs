//! `crops-agent doctor`: what this box needs to run the agent, checked one
//! thing at a time, each problem printed with its fix. Nothing is changed.
//!
//! * Podman: it runs, and which version.
//! * Rootless prerequisites (not as root): subordinate ids in
//!   `/etc/subuid` and `/etc/subgid`, `newuidmap`/`newgidmap` (Debian's
//!   uidmap) and a user-mode network (`slirp4netns` or `pasta`).
//! * cgroups: v1 or v2, and whether memory, CPU and PIDs limits will apply
//!   (rootless on v1: no; rootless on v2: only with the controllers
//!   delegated to the user's slice), as `crate::rootless` finds it (what
//!   `run` also reports to the orchestrator).
//! * The orchestrator (when a URL is known): reached directly or through
//!   the proxy, its certificate trusted (else: `--ca-file`), and the clock
//!   against its `Date` header (a skew beyond 60 s fails: tokens expire,
//!   logs disagree).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_lite::{AsyncReadExt, AsyncWriteExt};

use crate::net::{Endpoint, NetError};
use crate::proxy::Proxy;
use crate::rootless::{uid, Cgroups, Report};

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

/// One line of the report: what was checked, what was found, how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub what: &'static str,
    pub verdict: Verdict,
    pub found: String,
    pub fix: Option<String>,
}

impl Check {
    fn ok(what: &'static str, found: impl Into<String>) -> Self {
        Self {
            what,
            verdict: Verdict::Ok,
            found: found.into(),
            fix: None,
        }
    }

    fn bad(
        what: &'static str,
        verdict: Verdict,
        found: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            what,
            verdict,
            found: found.into(),
            fix: Some(fix.into()),
        }
    }
}

/// What the doctor looks at.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    pub podman: PathBuf,
    /// The orchestrator's URL, if one is known (flag, environment, config).
    pub url: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub proxy: Option<Proxy>,
}

/// Every check, in order.
pub async fn doctor(opts: &DoctorOptions) -> Vec<Check> {
    let uid = uid();
    let root = uid == 0;
    let mut checks = vec![podman(&opts.podman).await];
    if !root {
        checks.extend(rootless());
    }
    checks.push(cgroups(uid, Path::new(crate::rootless::CGROUP_ROOT)));
    match &opts.url {
        Some(url) => checks.extend(orchestrator(url, opts).await),
        None => checks.push(Check::bad(
            "orchestrator",
            Verdict::Warn,
            "no orchestrator URL: not checked",
            "pass --url https://host:port, or enroll first",
        )),
    }
    checks
}

async fn podman(program: &Path) -> Check {
    match crate::podman::Podman::new(program).version().await {
        Ok(version) => Check::ok("podman", format!("{} {version}", program.display())),
        Err(e) => Check::bad(
            "podman",
            Verdict::Fail,
            format!("cannot run {}: {e}", program.display()),
            "install Podman (Debian: apt install podman), or pass --podman /path/to/podman",
        ),
    }
}

/// The name `/etc/passwd` gives `uid`.
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        (f.nth(1)? == uid.to_string()).then(|| name.to_owned())
    })
}

/// Whether `program` is an executable file on `PATH`.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .any(|dir| std::fs::metadata(dir.join(program)).is_ok_and(|m| m.is_file()))
    })
}

fn rootless() -> Vec<Check> {
    let uid = uid();
    let name = user_name(uid).unwrap_or_else(|| uid.to_string());
    let mut out = Vec::new();
    for file in ["/etc/subuid", "/etc/subgid"] {
        let listed = std::fs::read_to_string(file).is_ok_and(|text| {
            text.lines().any(|l| {
                let owner = l.split(':').next().unwrap_or_default();
                owner == name || owner == uid.to_string()
            })
        });
        out.push(if listed {
            Check::ok("rootless ids", format!("{file} has a range for {name}"))
        } else {
            Check::bad(
                "rootless ids",
                Verdict::Fail,
                format!("{file} has no range for {name}"),
                format!("as root: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {name}"),
            )
        });
    }
    out.push(if on_path("newuidmap") && on_path("newgidmap") {
        Check::ok("rootless ids", "newuidmap and newgidmap found")
    } else {
        Check::bad(
            "rootless ids",
            Verdict::Fail,
            "newuidmap/newgidmap missing",
            "apt install uidmap",
        )
    });
    out.push(if on_path("slirp4netns") || on_path("pasta") {
        Check::ok("rootless network", "slirp4netns or pasta found")
    } else {
        Check::bad(
            "rootless network",
            Verdict::Fail,
            "neither slirp4netns nor pasta found",
            "apt install slirp4netns",
        )
    });
    out
}

/// cgroups under `root` (normally `/sys/fs/cgroup`) for user `uid`.
fn cgroups(uid: u32, root: &Path) -> Check {
    let report = Report::at(uid, root);
    let found = report
        .limitations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    match crate::rootless::cgroups(uid, root) {
        Cgroups::V1 if !report.rootless => {
            Check::ok("cgroups", "v1: memory, CPU and PIDs limits apply (as root)")
        }
        Cgroups::V2 { .. } if report.limitations.is_empty() => Check::ok(
            "cgroups",
            if report.rootless {
                "v2, memory, cpu and pids delegated to this user: limits apply"
            } else {
                "v2: memory, CPU and PIDs limits apply"
            },
        ),
        Cgroups::V1 => Check::bad(
            "cgroups",
            Verdict::Warn,
            format!("v1, rootless: {found}"),
            "run the agent as root, or boot with cgroup v2 (systemd.unified_cgroup_hierarchy=1)",
        ),
        Cgroups::V2 { .. } => Check::bad(
            "cgroups",
            Verdict::Warn,
            format!("v2, rootless: {found}"),
            "delegate them: a systemd drop-in user@.service.d/delegate.conf with Delegate=cpu cpuset io memory pids",
        ),
    }
}

/// Reach the orchestrator, check its certificate, compare clocks.
async fn orchestrator(url: &str, opts: &DoctorOptions) -> Vec<Check> {
    let endpoint = match crate::net::socket_url(url).and_then(|u| Endpoint::parse(&u)) {
        Ok(e) => e.through(opts.proxy.clone()),
        Err(e) => {
            return vec![Check::bad(
                "orchestrator",
                Verdict::Fail,
                e.to_string(),
                "pass the orchestrator's base URL, https://host:port",
            )]
        }
    };
    let route = match &opts.proxy {
        Some(p) => format!("through the proxy {}", p.authority()),
        None => "directly".to_owned(),
    };
    let tls = match crate::tls::client_config(opts.ca_file.as_deref()) {
        Ok(tls) => tls,
        Err(e) => {
            return vec![Check::bad(
                "CA trust",
                Verdict::Fail,
                e.to_string(),
                "pass a readable PEM file to --ca-file",
            )]
        }
    };
    let mut stream = match endpoint.dial(&tls, Duration::from_secs(10)).await {
        Ok(s) => s,
        Err(e) => return vec![dial_failure(&endpoint, &route, e)],
    };
    let mut checks = vec![Check::ok(
        "orchestrator",
        format!(
            "{} reached {route}{}",
            endpoint.authority(),
            if endpoint.secure {
                ", its certificate trusted"
            } else {
                ""
            }
        ),
    )];
    checks.push(clock(&mut stream, &endpoint).await);
    checks
}

fn dial_failure(endpoint: &Endpoint, route: &str, e: NetError) -> Check {
    match e {
        NetError::Tls { .. } => Check::bad(
            "CA trust",
            Verdict::Fail,
            format!("{e}"),
            "if the orchestrator's certificate comes from a private CA, pass --ca-file ca.pem (the CA's certificate); \
             behind a TLS-inspecting proxy, its CA",
        ),
        NetError::Proxy(_) => Check::bad("orchestrator", Verdict::Fail, format!("{e}"), "check --proxy or HTTPS_PROXY (and its user and password)"),
        _ => Check::bad(
            "orchestrator",
            Verdict::Fail,
            format!("cannot reach {} {route}: {e}", endpoint.authority()),
            "check the URL, the network and any firewall; behind a proxy, set HTTPS_PROXY or --proxy",
        ),
    }
}

/// `GET /healthz` over `stream`: the skew between the `Date` it answers and ours.
async fn clock(stream: &mut crate::net::Stream, endpoint: &Endpoint) -> Check {
    let ask = format!(
        "GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        endpoint.authority()
    );
    let mut answer = Vec::new();
    let read = async {
        stream.write_all(ask.as_bytes()).await?;
        stream.flush().await?;
        let mut buf = [0u8; 4096];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.len() < 64 * 1024 {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    if let Err(e) = read.await {
        return Check::bad(
            "clock",
            Verdict::Warn,
            format!("could not ask the orchestrator's time: {e}"),
            "run the doctor again",
        );
    }
    let text = String::from_utf8_lossy(&answer);
    let date = text.lines().find_map(|l| {
        l.split_once(':')
            .filter(|(k, _)| k.eq_ignore_ascii_case("date"))
            .map(|(_, v)| v.trim().to_owned())
    });
    let Some(theirs) = date.as_deref().and_then(http_date) else {
        return Check::bad(
            "clock",
            Verdict::Warn,
            "the orchestrator sent no Date header",
            "compare the clocks by hand: date -u",
        );
    };
    let ours = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let skew = ours.abs_diff(theirs);
    let found = format!("{skew} s from the orchestrator's clock");
    match skew {
        0..=5 => Check::ok("clock", found),
        6..=60 => Check::bad(
            "clock",
            Verdict::Warn,
            found,
            "enable time sync: timedatectl set-ntp true",
        ),
        _ => Check::bad(
            "clock",
            Verdict::Fail,
            found,
            "enable time sync: timedatectl set-ntp true (or ntpdate/chrony on the box)",
        ),
    }
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) as Unix seconds.
pub fn http_date(s: &str) -> Option<u64> {
    let mut it = s.split_whitespace().skip(1);
    let day: u64 = it.next()?.parse().ok()?;
    let name = it.next()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == name)? as u64
        + 1;
    let year: i64 = it.next()?.parse().ok()?;
    let mut hms = it.next()?.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    if it.next()? != "GMT" || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, mo) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * mo as i64 + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days)
        .ok()
        .map(|d| d * 86_400 + h * 3600 + m * 60 + sec)
}

/// The report as printed: a line per check, its fix under it.
pub fn report(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        let tag = match c.verdict {
            Verdict::Ok => "ok  ",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        };
        out.push_str(&format!("{tag}  {:<16} {}\n", c.what, c.found));
        if let Some(fix) = &c.fix {
            out.push_str(&format!("      fix: {fix}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_http_dates() {
        assert_eq!(
            http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(
            http_date("Mon, 07 Dec 2026 09:35:00 GMT"),
            Some(1_796_636_100)
        );
        for bad in [
            "",
            "Sun, 06 Nov 1994 08:49:37",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
        ] {
            assert_eq!(http_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn cgroups_say_whether_limits_apply() {
        let dir = std::env::temp_dir().join(format!("crops-doctor-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let v1 = cgroups(1000, &dir);
        assert_eq!(v1.verdict, Verdict::Warn, "v1 rootless");
        assert!(v1.found.contains("limits are ignored"), "{v1:?}");
        assert_eq!(cgroups(0, &dir).verdict, Verdict::Ok, "v1 root");
        std::fs::write(dir.join("cgroup.controllers"), "cpu memory pids").unwrap();
        assert_eq!(cgroups(0, &dir).verdict, Verdict::Ok, "v2 root");
        assert_eq!(
            cgroups(1000, &dir).verdict,
            Verdict::Warn,
            "v2 rootless, nothing delegated"
        );
        let service = dir.join("user.slice/user-1000.slice/user@1000.service");
        std::fs::create_dir_all(&service).unwrap();
        std::fs::write(service.join("cgroup.controllers"), "cpu memory pids").unwrap();
        assert_eq!(cgroups(1000, &dir).verdict, Verdict::Ok, "v2, delegated");
        std::fs::remove_dir_all(&dir).unwrap();
        let r = report(&[Check::bad("podman", Verdict::Fail, "gone", "install it")]);
        assert_eq!(r, "FAIL  podman           gone\n      fix: install it\n");
    }
}
