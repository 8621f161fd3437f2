//! The null WASI context: nothing is granted through it, and as a guest
//! sees it, with components written as WAT text that import WASI the way
//! componentize-py's output does: time
//! does not pass (a sleep forever returns at once), randomness is the same
//! in every decision, and stdout is captured into the log and capped.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::policy::cases::tests_support::request;
use crate::policy::hostile::CONTRACT_TYPES;
use crate::policy::{Compiled, Limits, Placement, Policies, PolicyError};
use wasmtime_wasi::cli::WasiCliCtxView;
use wasmtime_wasi::filesystem::WasiFilesystemCtxView;
use wasmtime_wasi::p2::bindings::cli::environment::Host as _;
use wasmtime_wasi::p2::bindings::clocks::wall_clock::Host as _;
use wasmtime_wasi::p2::bindings::filesystem::preopens::Host as _;
use wasmtime_wasi::p2::bindings::sockets::network::IpAddressFamily;
use wasmtime_wasi::p2::bindings::sockets::tcp_create_socket::Host as _;
use wasmtime_wasi::sockets::WasiSocketsCtxView;

use super::*;

/// WASI imports (0.2.0, as older toolchains ask: the host's 0.2.x serves
/// them) and the core functions lowered from them, module "wasi".
const WASI_IMPORTS: &str = r#"
  (import "wasi:io/poll@0.2.0" (instance $poll
    (export "pollable" (type $p (sub resource)))
    (export "[method]pollable.block" (func (param "self" (borrow $p))))))
  (alias export $poll "pollable" (type $pollable))
  (import "wasi:clocks/monotonic-clock@0.2.0" (instance $clock
    (alias outer 1 $pollable (type $p'))
    (export "pollable" (type $p (eq $p')))
    (export "now" (func (result u64)))
    (export "subscribe-duration" (func (param "when" u64) (result (own $p))))))
  (import "wasi:random/random@0.2.0" (instance $random
    (export "get-random-u64" (func (result u64)))))
  (import "wasi:io/error@0.2.0" (instance $error
    (export "error" (type (sub resource)))))
  (alias export $error "error" (type $io-error))
  (import "wasi:io/streams@0.2.0" (instance $streams
    (alias outer 1 $io-error (type $e'))
    (export "error" (type $e (eq $e')))
    (export "output-stream" (type $os (sub resource)))
    (type $stream-error (variant (case "last-operation-failed" (own $e)) (case "closed")))
    (export "stream-error" (type $se (eq $stream-error)))
    (export "[method]output-stream.blocking-write-and-flush"
      (func (param "self" (borrow $os)) (param "contents" (list u8)) (result (result (error $se)))))))
  (alias export $streams "output-stream" (type $output-stream))
  (import "wasi:cli/stdout@0.2.0" (instance $stdout
    (alias outer 1 $output-stream (type $os'))
    (export "output-stream" (type $os (eq $os')))
    (export "get-stdout" (func (result (own $os))))))

  (core module $memory (memory (export "memory") 16))
  (core instance $mem (instantiate $memory))
  (alias core export $mem "memory" (core memory $memory))
  (core func $block (canon lower (func $poll "[method]pollable.block")))
  (core func $drop (canon resource.drop $pollable))
  (core func $now (canon lower (func $clock "now")))
  (core func $sleep (canon lower (func $clock "subscribe-duration")))
  (core func $random (canon lower (func $random "get-random-u64")))
  (core func $stdout (canon lower (func $stdout "get-stdout")))
  (core func $write (canon lower (func $streams "[method]output-stream.blocking-write-and-flush")
    (memory $memory)))
  (core instance $wasi
    (export "memory" (memory $memory))
    (export "block" (func $block)) (export "drop" (func $drop)) (export "now" (func $now))
    (export "sleep" (func $sleep)) (export "random" (func $random))
    (export "stdout" (func $stdout)) (export "write" (func $write)))
"#;

/// A `place` (for no candidates) whose core body may call the lowered
/// WASI functions; it answers the reason `$reason_len` bytes at 1024.
fn wasi_component(body: &str) -> Vec<u8> {
    let text = format!(
        r#"(component
  {WASI_IMPORTS}
  (core module $m
    (import "wasi" "memory" (memory 16))
    (import "wasi" "block" (func $block (param i32)))
    (import "wasi" "drop" (func $drop (param i32)))
    (import "wasi" "now" (func $now (result i64)))
    (import "wasi" "sleep" (func $sleep (param i64) (result i32)))
    (import "wasi" "random" (func $random (result i64)))
    (import "wasi" "stdout" (func $stdout (result i32)))
    (import "wasi" "write" (func $write (param i32 i32 i32 i32)))
    (global $heap (mut i32) (i32.const 0xF0000))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
      (global.set $heap (i32.add (local.get $p) (local.get 3)))
      (local.get $p))
    ;; 16 letters a-p, one per nibble of $x, at $at.
    (func $hex (param $at i32) (param $x i64)
      (local $i i32)
      (loop $l
        (i32.store8 (i32.add (local.get $at) (local.get $i))
          (i32.add (i32.const 97) (i32.wrap_i64 (i64.and (i64.const 15)
            (i64.shr_u (local.get $x) (i64.extend_i32_u (i32.mul (local.get $i) (i32.const 4))))))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $l (i32.lt_u (local.get $i) (i32.const 16)))))
    (func (export "place") (param i32) (result i32)
      (local $reason_len i32)
      {body}
      (i32.store (i32.const 16) (i32.const 1024))
      (i32.store (i32.const 20) (local.get $reason_len))
      (i32.const 0)))
  (core instance $i (instantiate $m (with "wasi" (instance $wasi))))
  {CONTRACT_TYPES}
  (func $place (param "req" $request) (param "candidates" $candidates) (result $placement)
    (canon lift (core func $i "place") (memory $memory) (realloc (core func $i "realloc"))))
  (export "place" (func $place))
)"#
    );
    wat::parse_str(text).expect("WASI guest WAT parses")
}

fn compile(p: &Policies, bytes: &[u8]) -> Arc<Compiled> {
    let limits = Limits {
        fuel: 50_000_000,
        memory_bytes: 4 << 20,
    };
    let m = p
        .host()
        .compile(bytes, limits)
        .expect("WASI guest compiles");
    assert!(m.wasi(), "runs with the null WASI context");
    Arc::new(m)
}

/// One placement for no candidates, failing the test if it takes longer
/// than a minute (a guest blocked in the host would never return).
fn place(p: &Policies, m: &Arc<Compiled>) -> Result<Placement, PolicyError> {
    let (p, m) = (p.fork(), Arc::clone(m));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(p.host().place(&m, &request(), &[]));
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the decision returned within a minute")
}

#[test]
fn a_sleep_forever_returns_and_clocks_and_random_are_the_same_every_decision() {
    let p = crate::policy::testing::policies();
    let m = compile(
        &p,
        &wasi_component(
            r#"(local $h i32)
               (local.set $h (call $sleep (i64.const -1)))
               (call $block (local.get $h))
               (call $drop (local.get $h))
               (call $hex (i32.const 1024) (call $random))
               (call $hex (i32.const 1040) (call $now))
               (local.set $reason_len (i32.const 32))"#,
        ),
    );
    let first = place(&p, &m).expect("decided").reason;
    let second = place(&p, &m).expect("decided").reason;
    assert_eq!(first, second, "the same input gave another answer");
    let (random, now) = first.split_at(16);
    assert_eq!(now, "aaaaaaaaaaaaaaaa", "the monotonic clock reads 0");
    assert_ne!(
        random, "aaaaaaaaaaaaaaaa",
        "random bytes are seeded, not zero"
    );
}

/// A tracing subscriber writing into a buffer, for the decision's log.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn stdout_goes_to_the_decision_log_capped() {
    // Five writes of 4 KiB of 'x': 20 KiB, of which the first 16 KiB are kept.
    let p = crate::policy::testing::policies();
    let m = compile(
        &p,
        &wasi_component(
            r#"(local $out i32) (local $n i32)
               (memory.fill (i32.const 4096) (i32.const 120) (i32.const 4096))
               (local.set $out (call $stdout))
               (loop $l
                 (call $write (local.get $out) (i32.const 4096) (i32.const 4096) (i32.const 512))
                 (local.set $n (i32.add (local.get $n) (i32.const 1)))
                 (br_if $l (i32.lt_u (local.get $n) (i32.const 5))))
               (i32.store8 (i32.const 1024) (i32.const 111))
               (i32.store8 (i32.const 1025) (i32.const 107))
               (local.set $reason_len (i32.const 2))"#,
        ),
    );
    let log = Log::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let log = log.clone();
            move || log.clone()
        })
        .with_ansi(false)
        .finish();
    let placed =
        tracing::subscriber::with_default(subscriber, || p.host().place(&m, &request(), &[]));
    assert_eq!(placed.expect("decided").reason, "ok");
    let log = String::from_utf8(log.0.lock().expect("log").clone()).expect("utf-8 log");
    assert!(log.contains("policy output"), "{log}");
    assert!(log.contains("dropped_bytes=4096"), "{log}");
    let kept = "x".repeat(OUTPUT_CAP);
    assert!(log.contains(&kept), "{log}");
    assert!(!log.contains(&format!("{kept}x")), "kept more than the cap");
}

#[test]
fn the_rust_stock_policies_import_nothing_and_skip_wasi() {
    let p = crate::policy::testing::policies();
    for name in ["plan-limits", "least-loaded", "binpack", "spread"] {
        let m = p.stock(name).expect("stock");
        assert!(!m.wasi(), "{name} runs on the fast engine");
    }
}

#[test]
fn nothing_is_granted() {
    let mut w = NullWasi::new();
    let NullWasi { ctx, table, .. } = &mut w;
    let mut cli = WasiCliCtxView {
        ctx: ctx.cli(),
        table,
    };
    assert!(cli.get_environment().expect("env").is_empty());
    assert!(cli.get_arguments().expect("args").is_empty());
    assert_eq!(cli.initial_cwd().expect("cwd"), None);
    let mut fs = WasiFilesystemCtxView {
        ctx: ctx.filesystem(),
        table,
    };
    assert!(fs.get_directories().expect("preopens").is_empty());
    let mut net = WasiSocketsCtxView {
        ctx: ctx.sockets(),
        table,
    };
    assert!(net.create_tcp_socket(IpAddressFamily::Ipv4).is_err());
    let mut clocks = wasmtime_wasi::clocks::WasiClocksCtxView {
        ctx: ctx.clocks(),
        table,
    };
    assert_eq!(clocks.now().expect("now").seconds, WALL_CLOCK.as_secs());
}

#[test]
fn output_is_kept_up_to_the_cap_and_the_rest_counted() {
    let w = NullWasi::new();
    w.stdout.write(b"hello ");
    w.stderr.write(&vec![b'e'; OUTPUT_CAP + 10]);
    w.stdout.write(b"world");
    let out = w.output();
    assert_eq!(out.stdout, "hello world");
    assert_eq!(out.stderr.len(), OUTPUT_CAP);
    assert_eq!(out.dropped, 10);
}
