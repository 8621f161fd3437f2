//! What a live terminal through Crops costs beside `podman exec -it` on a
//! local PTY, in one run: keystroke echo latency (one byte typed into a raw
//! `cat`, timed until it comes back; the two paths interleaved per keystroke
//! so machine drift falls on both) and the throughput of a large output:
//! `cat` of a file made in the container first, and `head -c` of /dev/zero.
//!
//! The Crops path is the browser's: a WebSocket client speaking the page's
//! protocol (subprotocol token, offset frames, an ack per frame) over TLS to
//! the release orchestrator, the agent's link, then the container's
//! terminal the way the agent reaches it: for a container the static agent
//! created, its PTY helper makes the PTY inside the container and hands
//! the master to the agent, which reads it directly; otherwise the agent's
//! own PTY and `podman exec -it`. The output says which. The direct path is `podman exec -it` on a PTY this process opens,
//! with the same shell and the same commands.
//!
//! Run: `make bench`, or `cargo bench -p crops-e2e --bench terminal` with
//! CROPS_AGENT_BIN and CROPS_ORCHESTRATOR_BIN set. CROPS_BENCH_KEYS keystrokes
//! per path (default 2000), CROPS_BENCH_CAT_MB the size of each output (default 200).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crops_e2e::fleet::Fleet;
use crops_e2e::harness;
use crops_e2e::term::{member_token, TermSocket};

/// Puts the shell's terminal in raw mode without echo, says so with a
/// marker the typed line cannot contain, and becomes `cat`.
const RAW_CAT: &[u8] = b"stty raw -echo; echo cat-ready-$((40+2)); exec cat\r";
const RAW_CAT_READY: &[u8] = b"cat-ready-42";

/// Alternating throughput rounds per path.
const THROUGHPUT_ROUNDS: usize = 3;

/// The end of busybox sh's prompt (`/workspace # `).
const PROMPT: &[u8] = b" # ";

/// The file `cat` reads, made in the container before the rounds.
const CAT_FILE: &str = "/tmp/crops-bench-cat";

/// The two outputs timed: `cat` of a file (the issue's "large cat"; busybox
/// `cat` writes the terminal 4 KiB at a time) and `head -c` of /dev/zero
/// (busybox `head` writes it 1 KiB at a time, so its own write calls weigh
/// on both paths alike).
fn producers(bytes: u64) -> [(&'static str, String); 2] {
    [
        ("cat FILE", format!("cat {CAT_FILE}")),
        ("head -c", format!("head -c {bytes} /dev/zero")),
    ]
}

fn timed_command(producer: &str) -> Vec<u8> {
    format!("stty raw -echo; {producer}; echo end-$((2+2))\r").into_bytes()
}

nix::ioctl_write_int_bad!(tiocsctty, nix::libc::TIOCSCTTY);

/// `podman exec -it ENGINE sh` on a PTY of our own, as a terminal would run it.
struct LocalPty {
    master: File,
    child: Child,
}

impl LocalPty {
    fn spawn(engine: &str) -> Self {
        let size = nix::pty::Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
        let slave: OwnedFd = pty.slave;
        let mut cmd = Command::new("podman");
        cmd.args(["exec", "-it", engine, "sh"])
            .env("CONTAINERS_CONF", harness::containers_conf())
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        // SAFETY: only async-signal-safe calls between fork and exec: a new
        // session, then the PTY (already fd 0) as its controlling terminal.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid()?;
                tiocsctty(0, 0)?;
                Ok(())
            });
        }
        let child = cmd.spawn().expect("podman exec -it");
        LocalPty {
            master: File::from(pty.master),
            child,
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).expect("writing the PTY");
    }

    /// Output until `needle`; returns how many bytes that took.
    fn read_until(&mut self, needle: &[u8]) -> u64 {
        let mut buf = vec![0u8; 64 * 1024];
        let mut tail: Vec<u8> = Vec::new();
        let mut total = 0u64;
        loop {
            let n = self.master.read(&mut buf).expect("reading the PTY");
            assert!(n > 0, "the local podman exec ended");
            total += n as u64;
            let from = tail.len().saturating_sub(needle.len());
            tail.extend_from_slice(&buf[..n]);
            if tail[from..].windows(needle.len()).any(|w| w == needle) {
                return total;
            }
            let drop = tail.len().saturating_sub(needle.len());
            tail.drain(..drop);
        }
    }
}

impl Drop for LocalPty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How the agent reaches the container's terminal, from its `crops.pty`
/// label (set when the agent mounted its PTY helper).
fn crops_way(engine: &str) -> &'static str {
    let out = Command::new("podman")
        .args([
            "inspect",
            "--format",
            "{{index .Config.Labels \"crops.pty\"}}",
            "--",
            engine,
        ])
        .env("CONTAINERS_CONF", harness::containers_conf())
        .output()
        .expect("podman inspect");
    if String::from_utf8_lossy(&out.stdout).trim() == "2" {
        "PTY made in the container, its master handed to the agent"
    } else {
        "`podman exec -it` on the agent's PTY"
    }
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One keystroke through the local PTY, timed until it is echoed.
fn key_local(pty: &mut LocalPty, key: u8) -> Duration {
    let t = Instant::now();
    pty.send(&[key]);
    let mut b = [0u8; 64];
    loop {
        let n = pty.master.read(&mut b).expect("reading the PTY");
        assert!(n > 0, "the local podman exec ended");
        if b[..n].contains(&key) {
            return t.elapsed();
        }
    }
}

/// One keystroke through the browser socket, timed until it is echoed.
fn key_crops(sock: &mut TermSocket, key: u8) -> Duration {
    let t = Instant::now();
    sock.send(&[key]).expect("sending a keystroke");
    loop {
        if sock.output().expect("the echo").contains(&key) {
            return t.elapsed();
        }
    }
}

fn main() {
    let keys = env_num("CROPS_BENCH_KEYS", 2000) as usize;
    let cat_bytes = env_num("CROPS_BENCH_CAT_MB", 200) * 1_000_000;
    // The product's heartbeat interval, not the tests' 1 s.
    std::env::set_var("CROPS_E2E_HEARTBEAT_SECS", "10");
    let f = Fleet::start("bench-term");
    let id = f.running("bench-terminal", json!({}));
    let engine = f.podman_ids(&id).remove(0);
    let way = crops_way(&engine);
    let token = member_token(&f);
    let connect = || {
        TermSocket::connect(&f._tls.ca, f.orch.port, &id, &token, None)
            .expect("the terminal socket")
    };

    // Keystroke echo: both paths in a raw `cat`, interleaved.
    let mut sock = connect();
    sock.send(RAW_CAT).unwrap();
    sock.read_until(RAW_CAT_READY).expect("cat through crops");
    let mut pty = LocalPty::spawn(&engine);
    pty.send(RAW_CAT);
    pty.read_until(RAW_CAT_READY);
    let warmup = 50;
    let mut local = Vec::with_capacity(keys);
    let mut crops = Vec::with_capacity(keys);
    for i in 0..keys + warmup {
        let key = b'a' + (i % 26) as u8;
        let (l, c) = (key_local(&mut pty, key), key_crops(&mut sock, key));
        if i >= warmup {
            local.push(l);
            crops.push(c);
        }
    }
    let (lp50, lp99) = (pct(&mut local, 0.5), pct(&mut local, 0.99));
    let (cp50, cp99) = (pct(&mut crops, 0.5), pct(&mut crops, 0.99));
    drop(sock);
    drop(pty);

    // Throughput: a large output through a fresh session on each path, in
    // alternating rounds, timed from the command's Enter (the shell already
    // at its prompt) to its last line.
    let made = f.exec(
        &id,
        &[
            "sh",
            "-c",
            &format!("head -c {cat_bytes} /dev/zero > {CAT_FILE}"),
        ],
    );
    assert_eq!(
        (made.status, &made.body["exitCode"]),
        (200, &json!(0)),
        "{made:?}"
    );
    let mut rounds = Vec::new();
    for round in 0..THROUGHPUT_ROUNDS {
        for (name, producer) in producers(cat_bytes) {
            let mut sock = connect();
            sock.read_until(PROMPT).expect("the prompt through crops");
            let t = Instant::now();
            sock.send(&timed_command(&producer)).unwrap();
            let (through, _) = sock.read_until(b"end-4").expect("the cat through crops");
            let crops = through as f64 / t.elapsed().as_secs_f64() / 1e6;
            let frame_kib = through as f64 / sock.frames.max(1) as f64 / 1024.0;
            drop(sock);
            let mut pty = LocalPty::spawn(&engine);
            pty.read_until(PROMPT);
            let t = Instant::now();
            pty.send(&timed_command(&producer));
            let local_through = pty.read_until(b"end-4");
            let local = local_through as f64 / t.elapsed().as_secs_f64() / 1e6;
            assert!(
                through >= cat_bytes && local_through >= cat_bytes,
                "short output: crops {through}, local {local_through} of {cat_bytes}"
            );
            rounds.push((name, round + 1, crops, local, frame_kib));
        }
    }

    println!("{keys} keystrokes per path, interleaved, after {warmup} of warm-up; times in ms\n");
    println!("| path | p50 | p99 |");
    println!("|---|---|---|");
    println!(
        "| `podman exec -it` on a local PTY | {:.3} | {:.3} |",
        ms(lp50),
        ms(lp99)
    );
    println!(
        "| browser socket -> orchestrator -> agent -> {way} | {:.3} | {:.3} |",
        ms(cp50),
        ms(cp99)
    );
    println!(
        "| added by Crops | {:+.3} | {:+.3} |",
        ms(cp50) - ms(lp50),
        ms(cp99) - ms(lp99)
    );
    println!(
        "| ratio | {:.2} | {:.2} |\n",
        ms(cp50) / ms(lp50),
        ms(cp99) / ms(lp99)
    );
    println!(
        "{cat_bytes} bytes through one session (`cat {CAT_FILE}`, `head -c {cat_bytes} /dev/zero`), MB/s\n"
    );
    println!("| output | round | crops | local PTY | ratio | crops frame, KiB on average |");
    println!("|---|---|---|---|---|---|");
    for (name, round, crops, local, kib) in &rounds {
        println!(
            "| `{name}` | {round} | {crops:.1} | {local:.1} | {:.2} | {kib:.1} |",
            crops / local
        );
    }
}
