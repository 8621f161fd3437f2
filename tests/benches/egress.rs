//! What the egress allow-list costs a container's HTTPS, in one run: a curl
//! in a Standard container, whose only way out is the agent's gate (on
//! the listener its relay handed over), beside the same curl in an Open
//! container on the host's network, both against one HTTPS server on this host's own address
//! (`crops_e2e::egress`), by name, the certificate verified.
//!
//! * Per request: one curl fetches the same small URL CROPS_BENCH_REQUESTS
//!   times (default 200; an exec takes at most 256 arguments) on one
//!   kept-alive connection (for Standard, one
//!   CONNECT tunnel), printing each transfer's `time_total`. The first
//!   transfer (connection, tunnel and TLS set-up) is reported apart; the
//!   p50 of the rest is the per-request figure. Rounds alternate between
//!   the two containers.
//! * Throughput: one download of CROPS_BENCH_MB MB (default 256), the two
//!   containers alternating, CROPS_BENCH_ROUNDS rounds (default 15); best
//!   and median of each, and the median of each round's ratio (the
//!   downloads of a round run back to back, so the machine's drift falls
//!   on all). For reference, each round also has the Open container's
//!   download through one hop of HAProxy forwarding TCP on this host
//!   (`option splice-auto`): what one proxy hop costs here when made by a
//!   proxy built for nothing else.
//! * Create: `POST /v1/containers` (create only) timed for a Standard
//!   container with a two-pattern allow-list (the agent also inspects the
//!   image and opens the gate) and for an Open one, alternating,
//!   CROPS_BENCH_CREATES each (default 15); median.
//!
//! Run: `make bench`, or `cargo bench -p crops-e2e --bench egress` with
//! CROPS_AGENT_BIN and CROPS_ORCHESTRATOR_BIN set (as root: it maps test
//! names in /etc/hosts).

use std::time::Instant;

use serde_json::json;

use crops_e2e::egress::{self, Server, WILD};
use crops_e2e::fleet::Fleet;
use crops_e2e::replicas::run_haproxy;

fn env_num(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn exec(f: &Fleet, id: &str, argv: &[&str]) -> String {
    let a = f.exec(id, argv);
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.body["exitCode"], 0, "{argv:?}: {a:?}");
    a.body["stdout"].as_str().unwrap_or_default().to_owned()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

/// How every curl here starts: quiet but for errors, the test CA trusted,
/// the (first) body thrown away.
const CURL: [&str; 6] = [
    "curl",
    "-sS",
    "--cacert",
    "/workspace/ca.pem",
    "-o",
    "/dev/null",
];

/// (first transfer, the rest) in ms, from one curl of `n` URLs.
fn requests(f: &Fleet, id: &str, url: &str, n: usize) -> (f64, Vec<f64>) {
    let mut argv = CURL.to_vec();
    argv.extend(["-w", "%{time_total}\\n"]);
    argv.extend(std::iter::repeat_n(url, n));
    let out = exec(f, id, &argv);
    // `-o` covers the first URL only: the others' bodies come between the times.
    let times: Vec<f64> = out
        .lines()
        .filter_map(|l| l.parse::<f64>().ok())
        .map(|s| s * 1000.0)
        .collect();
    assert_eq!(times.len(), n, "{out}");
    (times[0], times[1..].to_vec())
}

/// MB/s of one download of `url`, curl given `extra` arguments too.
fn download(f: &Fleet, id: &str, url: &str, extra: &[&str]) -> f64 {
    let mut argv = CURL.to_vec();
    argv.extend(["-w", "%{speed_download}"]);
    argv.extend(extra);
    argv.push(url);
    let out = exec(f, id, &argv);
    let speed: f64 = out
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{e}: {out:?}"));
    speed / 1e6
}

fn main() {
    let n = (env_num("CROPS_BENCH_REQUESTS", 200) as usize).clamp(2, 240);
    let mb = env_num("CROPS_BENCH_MB", 256);
    let rounds = env_num("CROPS_BENCH_ROUNDS", 15) as usize;
    let creates = env_num("CROPS_BENCH_CREATES", 15) as usize;
    std::env::set_var("CROPS_E2E_HEARTBEAT_SECS", "10");
    egress::map_names();
    let f = Fleet::start("bench-egress");
    f.set_plan("enterprise");
    let https = Server::https(&f.dir);
    let small = format!("https://{WILD}:{}/", https.port);
    let big = format!("https://{WILD}:{}/bytes/{}", https.port, mb * 1_000_000);
    let gated = egress::curl_container(
        &f,
        "bench-eg-std",
        json!({ "allowedDomains": [WILD] }),
        &https.ca_pem,
    );
    let open = egress::curl_container(
        &f,
        "bench-eg-open",
        json!({ "profile": "open" }),
        &https.ca_pem,
    );

    let (mut first, mut rest) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
    for round in 0..4 {
        for (i, id) in [&gated, &open].into_iter().enumerate() {
            let (a, b) = requests(&f, id, &small, n);
            if round > 0 {
                first[i].push(a);
                rest[i].extend(b);
            }
        }
    }
    // For reference, one hop through a proxy made for it: HAProxy
    // forwarding TCP (spliced) on this host, the Open container's curl sent
    // to it.
    let (mut haproxy, hport) = run_haproxy(&f.dir.0, |port| {
        format!(
            "defaults\n    mode tcp\n    option splice-auto\n    timeout connect 5s\n    \
             timeout client 1m\n    timeout server 1m\n\
             frontend hop\n    bind 127.0.0.1:{port}\n    default_backend server\n\
             backend server\n    server s {}:{}\n",
            egress::host_ip(),
            https.port
        )
    });
    let via = format!("{WILD}:{}:127.0.0.1:{hport}", https.port);
    let mut speeds = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..rounds {
        speeds[0].push(download(&f, &gated, &big, &[]));
        speeds[1].push(download(&f, &open, &big, &[]));
        speeds[2].push(download(&f, &open, &big, &["--connect-to", &via]));
    }
    let _ = haproxy.kill();
    let _ = haproxy.wait();
    let mut create_ms = [Vec::new(), Vec::new()];
    for k in 0..creates {
        for (i, extra) in [
            json!({ "profile": "standard", "allowedDomains": [WILD, "pypi.org"] }),
            json!({ "profile": "open" }),
        ]
        .into_iter()
        .enumerate()
        {
            let mut body = json!({ "image": egress::curl_image(), "command": ["sleep", "3600"] });
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            let t = Instant::now();
            let a = f.create(&format!("bench-eg-c{k}-{i}"), body);
            create_ms[i].push(t.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(a.status, 201, "{a:?}");
        }
    }

    println!(
        "egress bench: curl {} in a container, HTTPS by name, certificate verified",
        egress::curl_image()
    );
    println!("per request, kept-alive connection ({n} requests x 3 rounds after a warm-up):");
    for (i, label) in ["standard (gate)", "open (host network)"]
        .iter()
        .enumerate()
    {
        let mut v = rest[i].clone();
        v.sort_by(f64::total_cmp);
        println!(
            "  {label:<24} p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  first (connect+TLS) median {:.2} ms",
            percentile(&v, 0.5),
            percentile(&v, 0.9),
            percentile(&v, 0.99),
            median(first[i].clone())
        );
    }
    let p50 = |i: usize| median(rest[i].clone());
    println!(
        "  added at p50: {:+.3} ms (goal <= 0.5 ms)",
        p50(0) - p50(1)
    );
    println!("throughput, {mb} MB download x {rounds}:");
    for (i, label) in [
        "standard (gate)",
        "open (host network)",
        "open, via HAProxy (tcp)",
    ]
    .iter()
    .enumerate()
    {
        let best = speeds[i].iter().copied().fold(0.0, f64::max);
        println!(
            "  {label:<24} median {:.0} MB/s  best {best:.0} MB/s",
            median(speeds[i].clone())
        );
    }
    // Each round's downloads run back to back: their ratio is what the
    // hop costs at that moment, whatever the machine does meanwhile.
    let paired = |k: usize| -> (f64, Vec<i64>) {
        let r: Vec<f64> = speeds[k]
            .iter()
            .zip(&speeds[1])
            .map(|(s, o)| s / o * 100.0)
            .collect();
        let mut each: Vec<i64> = r.iter().map(|x| x.round() as i64).collect();
        each.sort();
        (median(r), each)
    };
    let (gate, each) = paired(0);
    println!(
        "  standard / open, paired by round: median {gate:.0} % (goal >= 80 %); rounds {each:?}"
    );
    let (hop, each) = paired(2);
    println!(
        "  reference, HAProxy hop / open, paired by round: median {hop:.0} %; rounds {each:?}"
    );
    println!("create (POST /v1/containers, {creates} each, alternating):");
    println!(
        "  standard with a 2-pattern allow-list  median {:.0} ms",
        median(create_ms[0].clone())
    );
    println!(
        "  open, no list                         median {:.0} ms",
        median(create_ms[1].clone())
    );
    crops_e2e::fleet::remove_tenant_containers(&f.tenant);
}
