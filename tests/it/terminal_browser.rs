//! The terminal page end to end in real headless chromium: the real
//! orchestrator serving /ui/terminal over TLS, the static agent, a running
//! busybox container on real Podman, and `tests/browser/terminal-e2e.js`
//! driving Debian's chromium through playwright-core, as a tenant member.
//!
//! The node script and this test talk in lines: node prints `step: …`,
//! a signal such as `READY_TO_KILL` that this side acts on (then answers
//! `KILLED` on node's stdin), and finally `PASS` or `FAIL: …`.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::fleet::*;
use crate::harness::*;
use crate::term::member_token;

/// The whole of one browser case, restarts included.
const CASE_DEADLINE: Duration = Duration::from_secs(300);

/// `node tests/browser/terminal-e2e.js CASE`, its stdout as lines.
struct Browser {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    stderr: PathBuf,
    transcript: Vec<String>,
}

impl Browser {
    fn start(case: &str, f: &Fleet, container: &str, token: &str) -> Self {
        let script = root().join("tests/browser/terminal-e2e.js");
        assert!(script.is_file(), "{} is missing", script.display());
        let node = std::env::var_os("CROPS_NODE").unwrap_or_else(|| "node".into());
        let stderr = f.dir.path(&format!("node-{case}.log"));
        let mut child = Command::new(&node)
            .arg(&script)
            .arg(case)
            .env("CROPS_URL", &f.orch.url)
            .env("CROPS_CONTAINER", container)
            .env("CROPS_TOKEN", token)
            .env("CROPS_SERVER_CERT", &f._tls.cert)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("node is required for the browser tests and cannot run ({node:?}: {e}); `make deps`")
            });
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Browser {
            child,
            stdin,
            lines,
            stderr,
            transcript: Vec::new(),
        }
    }

    fn failed(&mut self, why: &str) -> ! {
        // Whatever node still has to say (a FAIL's screen dump spans lines);
        // after a FAIL it exits by itself, cleaning up its chromium.
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.transcript.push(line);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!(
            "browser case {why}\n--- node stdout ---\n{}\n--- node stderr ---\n{}",
            self.transcript.join("\n"),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        );
    }

    /// Read lines until PASS; `act` answers each signal line with the line to send back.
    fn run(mut self, mut act: impl FnMut(&str) -> Option<&'static str>) {
        let deadline = Instant::now() + CASE_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => self.failed("timed out"),
                Err(RecvTimeoutError::Disconnected) => self.failed("ended without PASS"),
            };
            eprintln!("node: {line}");
            self.transcript.push(line.clone());
            if line == "PASS" {
                break;
            }
            if line.starts_with("FAIL") {
                self.failed("failed");
            }
            if line.starts_with("step: ") {
                continue;
            }
            match act(&line) {
                Some(answer) => writeln!(self.stdin, "{answer}").expect("writing to node"),
                None => self.failed(&format!("sent a line this test does not know: {line}")),
            }
        }
        let status = wait_until("node to exit", Duration::from_secs(30), || {
            self.child.try_wait().unwrap()
        });
        if !status.success() {
            self.failed(&format!("printed PASS but exited {status}"));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A panic on this side (an assert in `act`) must not leave chromium behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fleet with one running busybox container and a member's token.
fn running_container(name: &str) -> (Fleet, String, String) {
    let f = Fleet::start(name);
    let id = f.running(&format!("e2e-{name}-{}", std::process::id()), json!({}));
    let token = member_token(&f);
    (f, id, token)
}

fn podman_exec(engine: &str, argv: &[&str]) -> bool {
    Command::new("podman")
        .arg("exec")
        .arg(engine)
        .args(argv)
        .env("CONTAINERS_CONF", containers_conf())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn the_page_types_resizes_reloads_and_never_answers_queries() {
    let (f, id, token) = running_container("term-page");
    Browser::start("basics", &f, &id, &token).run(|_| None);
}

#[test]
fn an_invite_link_joins_the_same_shell_and_a_wrong_token_keeps_the_saved_one() {
    let (f, id, token) = running_container("term-share");
    Browser::start("share", &f, &id, &token).run(|_| None);
}

#[test]
fn the_page_reconnects_to_the_same_shell_after_the_orchestrator_is_killed() {
    let (mut f, id, token) = running_container("term-restart");
    let engine = f.podman_ids(&id).remove(0);
    Browser::start("restart", &f, &id, &token).run(|signal| match signal {
        "READY_TO_KILL" => {
            f.orch.kill9();
            // The shell's background job prints only now, with no orchestrator.
            assert!(podman_exec(&engine, &["touch", "/tmp/go"]), "touch /tmp/go");
            wait_until(
                "the job's output while the orchestrator is down",
                Duration::from_secs(30),
                || podman_exec(&engine, &["test", "-e", "/tmp/later-done"]).then_some(()),
            );
            Some("KILLED")
        }
        // The page was typed a command while nothing served it.
        "TYPED" => {
            f.orch.spawn();
            Some("RESTARTED")
        }
        _ => None,
    });
}
