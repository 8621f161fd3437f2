//! Policy decisions per second and the cost of a fresh instance, with the
//! stock policies over 1,000 simulated workers, on one thread (one core);
//! then the same decisions by the Python and JavaScript example policies
//! (policies/dist/examples, null WASI context) beside the Rust ones.
//!
//! Last, an uploaded Python policy loaded again as an activation and a
//! restart load it (from the compiled-module cache, `policy::cache`), and
//! what each loaded copy keeps resident; `--load` runs only that.
//!
//! Run: `make policies && cargo bench -p crops-orchestrator --bench policy`
//! (BENCHMARKS.md records the numbers). Not a test: `cargo test` skips it.
//! `--stock` stops after the stock policies (placement, admission, fresh
//! instance): what `tests/bench-policy-sidebyside.sh` compares across trees.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use orchestrator::policy::cache::Cache;
use orchestrator::policy::engine::MAX_FUEL;
use orchestrator::policy::{
    Admission, Compiled, Limits, PlanInput, Policies, Profile, Request, Usage, WorkerInput,
    WorkerMode,
};

const WORKERS: usize = 1000;

fn request() -> Request {
    Request {
        tenant_id: "t1".into(),
        name: "dev".into(),
        image: "docker.io/library/alpine:3".into(),
        profile: Profile::Standard,
        pinned_worker: None,
        platform: None,
        arch: None,
        region: None,
        memory_bytes: 4 << 30,
        cpus: 2,
        labels: vec![("team".into(), "a".into())],
    }
}

/// A varied fleet: three regions, two arches, some byom of other tenants,
/// a few drained, cordoned or offline.
fn worker(i: usize) -> WorkerInput {
    WorkerInput {
        id: format!("0b4f6a0e-3c1d-4e2a-9f00-{i:012}"),
        mode: if i % 10 == 0 {
            WorkerMode::Byom
        } else {
            WorkerMode::Fleet
        },
        tenant_id: if i % 10 == 0 {
            format!("tenant-{i}")
        } else {
            String::new()
        },
        platform: if i % 25 == 0 { "windows" } else { "linux" }.into(),
        arch: if i % 3 == 0 { "aarch64" } else { "x86_64" }.into(),
        region: ["eu-west", "us-east", "ap-south"][i % 3].into(),
        labels: vec![("tier".into(), "standard".into())],
        cpu_count: 8,
        memory_total: 32 << 30,
        memory_free: ((i % 29) as u64 + 1) << 30,
        disk_free: Some(200 << 30),
        cpu_load_permille: (i * 37 % 1000) as u32,
        containers_running: (i % 17) as u32,
        images: vec![format!("localhost/team/img{}:1", i % 7)],
        security_floor: Profile::Open,
        drained: i % 97 == 3,
        cordoned: i % 89 == 4,
        online: i % 53 != 5,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Decisions per second of `decide`, run for about `secs` seconds after a
/// warm-up, with its mean and p99 (each decision timed).
fn rate(secs: u64, mut decide: impl FnMut()) -> (f64, Duration, Duration) {
    for _ in 0..3 {
        decide();
    }
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        let t = Instant::now();
        decide();
        samples.push(t.elapsed());
    }
    let total = start.elapsed();
    samples.sort();
    let n = samples.len() as u32;
    (
        f64::from(n) / total.as_secs_f64(),
        total / n,
        percentile(&samples, 0.99),
    )
}

/// The least fuel with which `place` over `workers` still decides (to 1 %).
fn fuel_needed(policies: &Policies, m: &Compiled, req: &Request, workers: &[WorkerInput]) -> u64 {
    let decides = |fuel: u64| {
        let limits = Limits { fuel, ..m.limits() };
        let m = m.with_limits(limits).expect("limits");
        policies.host().place(&m, req, workers).is_ok()
    };
    let (mut lo, mut hi) = (1u64, MAX_FUEL);
    assert!(decides(hi), "does not decide even with {MAX_FUEL} fuel");
    while hi - lo > hi / 100 {
        let mid = lo + (hi - lo) / 2;
        if decides(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

/// The Python and JavaScript examples beside the Rust stock policies:
/// a fresh instance and the call, per decision. The examples run with the
/// most fuel a module may have (an interpreter over 1,000 workers needs
/// more than the default); the least that suffices is printed.
fn languages(policies: &Policies, req: &Request, workers: &[WorkerInput]) {
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/dist/examples");
    let plan = PlanInput {
        name: "pro".into(),
        self_hosted_workers: Some(10),
        concurrent_containers: Some(15),
    };
    let usage = Usage::default();
    let few = &workers[..10];
    println!("\nper decision (fresh instance + call): Rust stock vs the examples");
    let stock = |name| policies.stock(name).expect("stock");
    let bytes = orchestrator::policy::stock::bytes("least-loaded").expect("stock bytes");
    let t = Instant::now();
    policies
        .host()
        .compile(bytes, Limits::default())
        .expect("stock compiles");
    println!("  rust compile: {:?} ({} bytes)", t.elapsed(), bytes.len());
    let mut modules = vec![("rust", stock("least-loaded"), stock("plan-limits"))];
    for name in ["python", "js"] {
        let path = dist.join(format!("{name}.wasm"));
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run `make policies`)", path.display()));
        let t = Instant::now();
        let m = policies
            .host()
            .compile(&bytes, Limits::default())
            .expect("example compiles");
        println!(
            "{name:>6} compile: {:?} ({} bytes)",
            t.elapsed(),
            bytes.len()
        );
        let limits = Limits {
            fuel: MAX_FUEL,
            ..Limits::default()
        };
        let m = Arc::new(m.with_limits(limits).expect("limits"));
        modules.push((name, Arc::clone(&m), m));
    }
    let host = policies.host();
    for (name, place, admit) in &modules {
        for ws in [few, workers] {
            let fuel = fuel_needed(policies, place, req, ws);
            println!(
                "{name:>6} fuel for place over {:>4} workers: {fuel}",
                ws.len()
            );
        }
        let (r, mean, p99) = rate(2, || {
            host.fresh_instance(place).expect("instance");
        });
        println!("{name:>6} fresh instance: {r:>9.0}/s, mean {mean:?}, p99 {p99:?}");
        let (r, mean, p99) = rate(2, || {
            let a = host.admit(admit, req, &plan, &usage).expect("admitted");
            assert_eq!(a, Admission::Allow);
        });
        println!("{name:>6} admit:          {r:>9.0}/s, mean {mean:?}, p99 {p99:?}");
        for ws in [few, workers] {
            let (r, mean, p99) = rate(3, || {
                let p = host.place(place, req, ws).expect("placed");
                assert!(p.chosen.is_some());
            });
            println!(
                "{name:>6} place {:>4} workers: {r:>7.0}/s, mean {mean:?}, p99 {p99:?}",
                ws.len()
            );
        }
    }
}

/// This process's resident set, KiB (`VmRSS`).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The Python example uploaded (compiled, cached), then loaded again as an
/// activation does (same engine) and as a restart does (a new engine):
/// both from the cache. Then the resident memory each loaded copy adds.
fn cached_load() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/dist/examples/python.wasm");
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run `make policy-examples`)", path.display()));
    let dir = std::env::temp_dir().join(format!("crops-bench-policy-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cache = || Cache::new(dir.clone(), b"bench secret");
    println!(
        "\nthe Python example ({} bytes) loaded again from the cache",
        bytes.len()
    );
    let rss = rss_kib();
    let policies = Policies::new(8).expect("policy engine").with_cache(cache());
    let t = Instant::now();
    drop(policies.compile(&bytes).expect("compiles"));
    println!(
        "  upload (compile + cache):  {:?}, resident after: +{} MiB",
        t.elapsed(),
        rss_kib().saturating_sub(rss) >> 10
    );
    let t = Instant::now();
    drop(policies.compile(&bytes).expect("loads"));
    println!("  activation (cached):       {:?}", t.elapsed());
    let t = Instant::now();
    let restarted = Policies::new(8).expect("policy engine").with_cache(cache());
    drop(restarted.compile(&bytes).expect("loads"));
    println!("  restart (new engine):      {:?}", t.elapsed());
    const COPIES: u64 = 3;
    let before = rss_kib();
    // Through the host: `Policies::compile` would share one copy.
    let cached = cache();
    let kept: Vec<_> = (0..COPIES)
        .map(|_| {
            let host = restarted.host();
            host.compile_cached(&bytes, Limits::default(), Some(&cached))
                .expect("loads")
        })
        .collect();
    let per = rss_kib().saturating_sub(before) / COPIES;
    println!(
        "  resident per loaded copy:  {} MiB ({COPIES} loaded)",
        per >> 10
    );
    drop(kept);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A stock policy by name, or a component read from a `.wasm` file.
fn module(policies: &Policies, name: &str) -> Arc<Compiled> {
    if !name.ends_with(".wasm") {
        return policies.stock(name).expect("stock module");
    }
    let bytes = std::fs::read(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    let m = policies
        .host()
        .compile(&bytes, Limits::default())
        .expect("module compiles");
    Arc::new(m)
}

fn main() {
    let policies = Policies::new(8).expect("policy engine");
    let workers: Vec<WorkerInput> = (0..WORKERS).map(worker).collect();
    let req = request();
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--languages") {
        languages(&policies, &req, &workers);
        return;
    }
    if args.iter().any(|a| a == "--load") {
        cached_load();
        return;
    }
    // `--place NAME N`: exactly N placements, for `perf stat` (instruction
    // counts do not depend on what else runs on the machine). NAME is a
    // stock policy or a component file (`path/to/x.wasm`), so a rebuilt
    // guest can be measured against the embedded one without relinking.
    if let Some(i) = args.iter().position(|a| a == "--place") {
        let (name, n) = (&args[i + 1], args[i + 2].parse::<u32>().expect("a count"));
        let m = module(&policies, name);
        for _ in 0..n {
            policies.host().place(&m, &req, &workers).expect("placed");
        }
        return;
    }
    // `--fuel NAME`: the least fuel a placement over the workers needs (the
    // guest's instruction count, whatever the machine's load).
    if let Some(i) = args.iter().position(|a| a == "--fuel") {
        let m = module(&policies, &args[i + 1]);
        let fuel = fuel_needed(&policies, &m, &req, &workers);
        println!("fuel for place over {WORKERS} workers: {fuel}");
        return;
    }
    println!("policy decisions, one thread, {WORKERS} workers per placement");

    for name in ["least-loaded", "binpack", "spread"] {
        let m = policies.stock(name).expect("stock module");
        // Warm up, then measure for about two seconds.
        for _ in 0..20 {
            let p = policies.host().place(&m, &req, &workers).expect("placed");
            assert!(p.chosen.is_some());
        }
        let start = Instant::now();
        let mut n = 0u32;
        while start.elapsed() < Duration::from_secs(2) {
            policies.host().place(&m, &req, &workers).expect("placed");
            n += 1;
        }
        let per = start.elapsed() / n;
        println!(
            "place {name:>12}: {:>8.0} decisions/s ({per:?} per decision)",
            f64::from(n) / start.elapsed().as_secs_f64()
        );
    }

    let plan = PlanInput {
        name: "pro".into(),
        self_hosted_workers: Some(10),
        concurrent_containers: Some(15),
    };
    let usage = Usage {
        running: 3,
        ..Usage::default()
    };
    let m = policies.stock("plan-limits").expect("stock module");
    let start = Instant::now();
    let mut n = 0u32;
    while start.elapsed() < Duration::from_secs(2) {
        let a = policies
            .host()
            .admit(&m, &req, &plan, &usage)
            .expect("admitted");
        assert_eq!(a, Admission::Allow);
        n += 1;
    }
    println!(
        "admit  plan-limits: {:>8.0} decisions/s ({:?} per decision)",
        f64::from(n) / start.elapsed().as_secs_f64(),
        start.elapsed() / n
    );

    for name in ["plan-limits", "least-loaded"] {
        let m = policies.stock(name).expect("stock module");
        let mut samples = Vec::with_capacity(20_000);
        for _ in 0..20_000 {
            let t = Instant::now();
            policies.host().fresh_instance(&m).expect("instance");
            samples.push(t.elapsed());
        }
        samples.sort();
        println!(
            "fresh instance {name:>12}: p50 {:?}, p99 {:?}, max {:?}",
            percentile(&samples, 0.50),
            percentile(&samples, 0.99),
            samples[samples.len() - 1]
        );
    }
    if args.iter().any(|a| a == "--stock") {
        return;
    }
    languages(&policies, &req, &workers);
    cached_load();
}
