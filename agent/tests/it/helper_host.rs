//! The PTY helper (`crops-pty`) run directly on the host, no Podman: the
//! agent binary started under the helper's name, fed frames on stdin as the
//! agent writes them. Typing, resizing, `tty`, exit statuses (by code, by
//! signal, a missing command), a hang-up on stdin's end, and a large output
//! arriving whole and in order.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use agent::terminal::wire;

/// The helper under test: this build's agent binary, started as `crops-pty`.
struct Helper {
    child: Child,
    stdin: Option<ChildStdin>,
    chunks: Receiver<Vec<u8>>,
    /// Everything read from stdout so far.
    out: Vec<u8>,
    /// stdout ended.
    closed: bool,
}

impl Helper {
    fn start(cols: u16, rows: u16, argv: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crops-agent"))
            .arg0("crops-pty")
            .args([cols.to_string(), rows.to_string(), "--".into()])
            .args(argv)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the agent binary as crops-pty");
        let mut stdout = child.stdout.take().unwrap();
        let (tx, chunks) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
        });
        Self {
            stdin: child.stdin.take(),
            child,
            chunks,
            out: Vec::new(),
            closed: false,
        }
    }

    fn send(&mut self, frames: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(frames).unwrap();
        stdin.flush().unwrap();
    }

    fn type_text(&mut self, text: &str) {
        let mut f = Vec::new();
        wire::encode_input(text.as_bytes(), &mut f);
        self.send(&f);
    }

    fn resize(&mut self, cols: u16, rows: u16) {
        let mut f = Vec::new();
        wire::encode_resize(cols, rows, &mut f);
        self.send(&f);
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out).into_owned()
    }

    /// Read until the output holds `needle`; fail after 30 s with what came.
    fn wait_output(&mut self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.text().contains(needle) {
            assert!(
                !self.closed,
                "output ended without {needle:?}: {:?}",
                self.text()
            );
            let left = deadline.saturating_duration_since(Instant::now());
            match self.chunks.recv_timeout(left) {
                Ok(c) => self.out.extend_from_slice(&c),
                Err(mpsc::RecvTimeoutError::Disconnected) => self.closed = true,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("no {needle:?} within 30 s: {:?}", self.text())
                }
            }
        }
    }

    /// Read to the end of the output, then the exit status.
    fn finish(mut self) -> (i32, Vec<u8>) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.chunks.recv_timeout(left) {
                Ok(c) => self.out.extend_from_slice(&c),
                Err(mpsc::RecvTimeoutError::Disconnected) => self.closed = true,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("the helper did not end"),
            }
        }
        let status = self.child.wait().unwrap();
        (
            status.code().expect("the helper exits, not killed"),
            self.out,
        )
    }
}

#[test]
fn the_helper_relays_typing_and_resizes_and_exits_with_the_status() {
    let mut h = Helper::start(80, 24, &["/bin/sh"]);
    h.type_text("stty size; tty\r");
    h.wait_output("24 80\r\n/dev/pts/");
    h.resize(132, 43);
    h.type_text("stty size\r");
    h.wait_output("43 132\r\n");
    h.type_text("exit 5\r");
    let (code, _) = h.finish();
    assert_eq!(code, 5);
}

#[test]
fn a_signal_a_missing_command_and_a_zero_size_give_their_statuses() {
    let killed = Helper::start(80, 24, &["sh", "-c", "kill -9 $$"]).finish();
    assert_eq!(killed.0, 128 + 9, "128 + the signal");
    let (code, out) = Helper::start(80, 24, &["/no/such/program"]).finish();
    assert_eq!(code, 127);
    let out = String::from_utf8_lossy(&out);
    assert!(
        out.contains("crops-pty: cannot run /no/such/program"),
        "the reason shows in the terminal: {out:?}"
    );
    let usage = Command::new(env!("CARGO_BIN_EXE_crops-agent"))
        .arg0("/.crops/crops-pty")
        .args(["0", "24", "--", "sh"])
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&usage.stderr).contains("COLS must be"));
}

/// Closing stdin is the agent hanging up: the command's process group gets
/// SIGHUP and the helper ends with 129.
#[test]
fn the_end_of_stdin_hangs_the_command_up() {
    let mut h = Helper::start(80, 24, &["sh", "-c", "echo pid=$$; exec sleep 1000"]);
    h.wait_output("\r\n");
    let pid: i32 = h
        .text()
        .trim()
        .strip_prefix("pid=")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("a pid: {:?}", h.text()));
    drop(h.stdin.take());
    let (code, _) = h.finish();
    assert_eq!(code, 129);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or a zombie waiting for its new parent to reap it.
        let alive = state
            .rsplit(") ")
            .next()
            .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('Z'));
        if !alive {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sleep {pid} outlived the hang-up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Several MB of output come through whole and in order before the exit.
#[test]
fn a_large_output_arrives_complete_and_in_order() {
    const N: u32 = 300_000;
    let (code, out) = Helper::start(80, 24, &["seq", "1", &N.to_string()]).finish();
    assert_eq!(code, 0);
    let expected: String = (1..=N).map(|i| format!("{i}\r\n")).collect();
    assert_eq!(out.len(), expected.len(), "every byte, no more");
    assert!(out == expected.as_bytes(), "in order");
}
