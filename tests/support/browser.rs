//! A browser case run from a Rust test: `node tests/browser/SCRIPT CASE`
//! (Debian's chromium under playwright-core, `tests/browser/lib.js`) against
//! a fleet's orchestrator, talking in lines: node prints `step: …`, a
//! signal such as `READY_TO_KILL` that the test acts on (answering a line
//! such as `KILLED` on node's stdin), and finally `PASS` or `FAIL: …`.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::fleet::Fleet;
use crate::harness::{root, wait_until};

/// The whole of one browser case, restarts included.
pub const CASE_DEADLINE: Duration = Duration::from_secs(300);

/// `node tests/browser/terminal-e2e.js CASE`, its stdout as lines.
pub struct Browser {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    stderr: PathBuf,
    transcript: Vec<String>,
}

impl Browser {
    /// `node tests/browser/SCRIPT CASE` against `f`'s orchestrator, with
    /// `env` added (the server's URL and certificate are always given).
    pub fn start(script: &str, case: &str, f: &Fleet, env: &[(&str, &str)]) -> Self {
        let script = root().join("tests/browser").join(script);
        assert!(script.is_file(), "{} is missing", script.display());
        let node = std::env::var_os("CROPS_NODE").unwrap_or_else(|| "node".into());
        let stderr = f.dir.path(&format!("node-{case}.log"));
        let mut child = Command::new(&node)
            .arg(&script)
            .arg(case)
            .env("CROPS_URL", &f.orch.url)
            .env("CROPS_SERVER_CERT", &f._tls.cert)
            .envs(env.iter().copied())
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
    pub fn run(mut self, mut act: impl FnMut(&str) -> Option<&'static str>) {
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
