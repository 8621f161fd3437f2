//! Policy decisions per second and the cost of a fresh instance, with the
//! stock policies over 1,000 simulated workers, on one thread (one core).
//!
//! Run: `make policies && cargo bench -p crops-orchestrator --bench policy`
//! (BENCHMARKS.md records the numbers). Not a test: `cargo test` skips it.

use std::time::{Duration, Instant};

use orchestrator::policy::{
    Admission, PlanInput, Policies, Profile, Request, Usage, WorkerInput, WorkerMode,
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

fn main() {
    let policies = Policies::new(8).expect("policy engine");
    let workers: Vec<WorkerInput> = (0..WORKERS).map(worker).collect();
    let req = request();
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
}
