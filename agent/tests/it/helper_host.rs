//! The PTY helper (`crops-pty`) run directly on the host, no Podman: the
//! agent binary started under the helper's name with fd 3 one end of a
//! socket pair, as `podman exec --preserve-fds=1` starts it, the test
//! holding the other end and, once handed over, the PTY master. Typing,
//! resizing, `tty`, exit statuses (by code, by signal, a missing command),
//! a hang-up when the master is closed, and a large output arriving whole
//! and in order.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use agent::pty_helper::handoff;

/// The helper under test: this build's agent binary, started as `crops-pty`.
struct Helper {
    child: Child,
    /// The PTY master, for input and resizes; `None` once hung up.
    master: Option<File>,
    chunks: Receiver<Vec<u8>>,
    /// Everything read from the master so far.
    out: Vec<u8>,
    /// The master's end was read.
    closed: bool,
}

/// Start the agent binary as `crops-pty ARGS…` with `fd3` (if any) as its
/// fd 3, as `podman exec --preserve-fds=1` does.
fn spawn_helper(args: &[String], fd3: Option<OwnedFd>) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_crops-agent"));
    cmd.arg0("crops-pty")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(fd) = fd3 {
        let from = fd.as_raw_fd();
        // SAFETY: `place_for_exec` makes async-signal-safe system calls
        // only. `fd` lives until after the spawn.
        unsafe {
            cmd.pre_exec(move || agent::pty_helper::place_for_exec(from));
        }
        let child = cmd.spawn().expect("the agent binary as crops-pty");
        drop(fd);
        return child;
    }
    cmd.spawn().expect("the agent binary as crops-pty")
}

fn size_args(cols: u16, rows: u16, argv: &[&str]) -> Vec<String> {
    let mut a = vec![cols.to_string(), rows.to_string(), "--".into()];
    a.extend(argv.iter().map(|s| (*s).to_owned()));
    a
}

/// Start the helper and take the master it hands over.
fn start_raw(cols: u16, rows: u16, argv: &[&str]) -> (Child, File) {
    let (ours, theirs) = handoff::pair().unwrap();
    let child = spawn_helper(&size_args(cols, rows, argv), Some(theirs));
    let master = handoff::receive_blocking(&ours)
        .expect("a hand-off")
        .expect("the helper hands the master over");
    (child, File::from(master))
}

impl Helper {
    fn start(cols: u16, rows: u16, argv: &[&str]) -> Self {
        let (child, master) = start_raw(cols, rows, argv);
        let mut reader = master.try_clone().unwrap();
        let (tx, chunks) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            // EIO (every slave closed) is the end, as is any error.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            master: Some(master),
            chunks,
            out: Vec::new(),
            closed: false,
        }
    }

    fn type_text(&mut self, text: &str) {
        let master = self.master.as_mut().expect("not hung up");
        master.write_all(text.as_bytes()).unwrap();
    }

    fn resize(&mut self, cols: u16, rows: u16) {
        let size = nix::pty::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let fd = self.master.as_ref().expect("not hung up").as_raw_fd();
        // SAFETY: TIOCSWINSZ reads one winsize through a pointer to a live local.
        let r = unsafe { nix::libc::ioctl(fd, nix::libc::TIOCSWINSZ, &size) };
        assert_eq!(r, 0, "TIOCSWINSZ");
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
    let (_ours, theirs) = handoff::pair().unwrap();
    let usage = spawn_helper(&size_args(0, 24, &["sh"]), Some(theirs))
        .wait_with_output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&usage.stderr).contains("COLS must be"));
}

/// Started without the socket (not by the agent), the helper says how it
/// must be started and runs nothing.
#[test]
fn without_fd_3_the_helper_refuses_and_runs_nothing() {
    let out = spawn_helper(&size_args(80, 24, &["sh", "-c", "echo ran"]), None)
        .wait_with_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--preserve-fds=1"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("ran"));
}

/// Closing the master is the agent hanging up: the kernel hangs the
/// terminal up, the command gets SIGHUP and the helper ends with 129.
#[test]
fn closing_the_master_hangs_the_command_up() {
    let (mut child, mut master) = start_raw(80, 24, &["sh", "-c", "echo pid=$$; exec sleep 1000"]);
    // Read on this thread, so that dropping `master` closes its only copy.
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    while !out.ends_with(b"\r\n") {
        let n = master.read(&mut buf).expect("the pid line");
        assert!(n > 0, "output ended early: {out:?}");
        out.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&out);
    let pid: i32 = text
        .trim()
        .strip_prefix("pid=")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("a pid: {text:?}"));
    drop(master);
    let code = child.wait().unwrap().code();
    assert_eq!(code, Some(129), "128 + SIGHUP");
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
