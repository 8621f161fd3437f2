//! The agent behind a real HTTP proxy: Debian's tinyproxy, started here
//! with basic authentication. The agent enrols and runs only through it
//! (`--proxy`, then `HTTPS_PROXY`): the proxy's log shows the tunnels, the
//! worker reports `gatewayStatus` `proxy` (the fleet's own worker `direct`),
//! TLS stays end to end (the certificate the agent was shown is the one
//! the orchestrator says it serves), and it comes back by itself after the
//! proxy restarts. A wrong proxy password is a clear error, retried with the
//! backoff; the agent does not stop. Through a real TLS-intercepting proxy
//! (mitmproxy's `mitmdump`, its CA trusted by the box) the worker says
//! `intercepted`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::fleet::*;
use crate::harness::*;

/// tinyproxy in the foreground on `port`, demanding `ann`/`s3cret`, its
/// log (stderr) in `dir/tinyproxy.log`, appended across restarts.
fn tinyproxy(dir: &Path, port: u16) -> Child {
    let cfg = dir.join("tinyproxy.conf");
    std::fs::write(
        &cfg,
        format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 600\nMaxClients 50\nAllow 127.0.0.1\n\
             BasicAuth ann s3cret\nLogLevel Info\nSyslog Off\n"
        ),
    )
    .unwrap();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("tinyproxy.log"))
        .unwrap();
    let mut child = Command::new("tinyproxy")
        .arg("-d")
        .arg("-c")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawning tinyproxy (run `make deps`, which installs it)");
    wait_until("tinyproxy to listen", Duration::from_secs(10), || {
        assert!(
            child.try_wait().unwrap().is_none(),
            "tinyproxy exited:\n{}",
            proxy_log(dir)
        );
        std::net::TcpStream::connect(("127.0.0.1", port))
            .is_ok()
            .then_some(())
    });
    child
}

fn proxy_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("tinyproxy.log")).unwrap_or_default()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Enrol a second worker of `f`'s tenant through the proxy `through`
/// (`--proxy`), trusting `ca`; its worker id.
fn enroll_through(f: &Fleet, through: &str, config: &Path, ca: &Path) -> String {
    let token = f.orch.join_token(&f.tenant);
    let out = f
        .cmd
        .command()
        .args([
            "enroll",
            "--url",
            &f.orch.url,
            "--token",
            &token,
            "--proxy",
            through,
        ])
        .arg("--config")
        .arg(config)
        .arg("--ca-file")
        .arg(ca)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let worker: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(config).unwrap()).unwrap();
    worker["workerId"].as_str().unwrap().to_owned()
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_agent_runs_through_a_real_proxy_survives_its_restart_and_names_a_wrong_password() {
    let f = Fleet::start("proxy");
    // Room for a second worker (the free plan has one).
    f.set_plan("pro");
    let dir = f.dir.path("proxy");
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let mut proxy = tinyproxy(&dir, port);
    let through = format!("http://ann:s3cret@127.0.0.1:{port}");

    // Enrol through the proxy (--proxy), then run through it (HTTPS_PROXY).
    let config: PathBuf = dir.join("worker.json");
    let worker = enroll_through(&f, &through, &config, &f.orch.ca);
    let mut cmd = f.cmd.clone();
    cmd.env = vec![
        ("HTTPS_PROXY".into(), through.clone()),
        ("NO_PROXY".into(), "example.com".into()),
    ];
    let agent = cmd.run(&config, dir.join("agent.log"), &[]);
    let first = f
        .orch
        .wait_worker(&worker, "the proxied worker online", |w| {
            w["heartbeat"]["gatewayStatus"] == "proxy"
        });
    let detail = first["heartbeat"]["gatewayStatusDetail"]
        .as_str()
        .unwrap_or_default();
    assert!(detail.contains(&format!("127.0.0.1:{port}")), "{first}");
    // The certificate shown is the one the orchestrator says it serves.
    assert!(detail.contains("TLS end to end"), "{first}");
    let direct = f
        .orch
        .wait_worker(&f.worker, "the direct worker's path", |w| {
            w["heartbeat"]["gatewayStatus"] == "direct"
        });
    let said = direct["heartbeat"]["gatewayStatusDetail"]
        .as_str()
        .unwrap_or_default();
    assert!(said.contains("TLS end to end"), "{direct}");
    let orch_port = f.orch.port.to_string();
    let tunnels = |log: &str| {
        log.lines()
            .filter(|l| l.contains("CONNECT") && l.contains(&orch_port))
            .count()
    };
    // The enrolment and the agent's socket: two tunnels to the orchestrator.
    assert!(tunnels(&proxy_log(&dir)) >= 2, "{}", proxy_log(&dir));

    // The proxy restarts: the agent comes back through it by itself.
    stop(proxy);
    proxy = tinyproxy(&dir, port);
    let connected = first["connectedAt"].as_u64().unwrap();
    f.orch
        .wait_worker(&worker, "the worker back through the new proxy", |w| {
            w["connectedAt"].as_u64().is_some_and(|t| t > connected)
                && w["heartbeat"]["gatewayStatus"] == "proxy"
        });
    assert!(tunnels(&proxy_log(&dir)) >= 3, "{}", proxy_log(&dir));

    // A wrong password: a clear error, again and again, and the agent lives on.
    let mut wrong = f.cmd.clone();
    wrong.env = vec![(
        "HTTPS_PROXY".into(),
        format!("http://ann:nope@127.0.0.1:{port}"),
    )];
    let mut refused = wrong.run(&config, dir.join("agent-wrong.log"), &[]);
    let log = wait_until("the refusal, twice", Duration::from_secs(30), || {
        let text = refused.log_text();
        (text.matches("refused the credentials (HTTP").count() >= 2).then_some(text)
    });
    assert!(
        !log.contains("nope"),
        "the password is never logged:\n{log}"
    );
    assert!(refused.is_running(), "the agent stopped:\n{log}");
    drop(refused);
    drop(agent);
    stop(proxy);
}

/// mitmproxy's `mitmdump` on `port`: it re-signs every TLS connection with
/// its own CA (written to `dir/mitmproxy-ca-cert.pem`), as an office's
/// inspecting proxy does. Its upstream, the orchestrator, has a test CA it
/// is told not to verify.
fn mitmdump(dir: &Path, port: u16) -> Child {
    let log = std::fs::File::create(dir.join("mitmdump.log")).unwrap();
    let mut child = Command::new("mitmdump")
        .args([
            "--listen-host",
            "127.0.0.1",
            "--listen-port",
            &port.to_string(),
        ])
        .arg("--set")
        .arg(format!("confdir={}", dir.display()))
        .args(["--set", "ssl_insecure=true", "--set", "flow_detail=1"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawning mitmdump (run `make deps`, which installs mitmproxy)");
    wait_until("mitmdump to listen", Duration::from_secs(60), || {
        assert!(child.try_wait().unwrap().is_none(), "mitmdump exited");
        (dir.join("mitmproxy-ca-cert.pem").is_file()
            && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok())
        .then_some(())
    });
    child
}

#[test]
fn a_real_tls_intercepting_proxy_is_reported_as_intercepted() {
    let f = Fleet::start("intercept");
    f.set_plan("pro");
    let dir = f.dir.path("mitm");
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let proxy = mitmdump(&dir, port);
    // The box trusts the middlebox's CA beside the orchestrator's, as a
    // managed office machine does.
    let bundle = dir.join("trusted.pem");
    let mut pem = std::fs::read(&f.orch.ca).unwrap();
    pem.extend(std::fs::read(dir.join("mitmproxy-ca-cert.pem")).unwrap());
    std::fs::write(&bundle, pem).unwrap();
    let through = format!("http://127.0.0.1:{port}");
    let config = dir.join("worker.json");
    let worker = enroll_through(&f, &through, &config, &bundle);
    let mut cmd = f.cmd.clone();
    cmd.env = vec![("HTTPS_PROXY".into(), through)];
    let agent = cmd.run(&config, dir.join("agent.log"), &[]);
    let seen = f
        .orch
        .wait_worker(&worker, "the intercepted worker online", |w| {
            w["heartbeat"]["gatewayStatus"].as_str().is_some()
        });
    assert_eq!(seen["heartbeat"]["gatewayStatus"], "intercepted", "{seen}");
    let detail = seen["heartbeat"]["gatewayStatusDetail"]
        .as_str()
        .unwrap_or_default();
    assert!(!detail.contains("TLS end to end"), "{detail}");
    // The middlebox did carry the agent's socket.
    let log = std::fs::read_to_string(dir.join("mitmdump.log")).unwrap_or_default();
    assert!(log.contains("/v1/agent"), "{log}");
    drop(agent);
    stop(proxy);
}
