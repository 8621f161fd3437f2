//! Durability: an acknowledged API write survives `kill -9` of the real
//! `crops-orchestrator` binary, and no multi-table write is half-applied.
//!
//! Each round starts the binary on the same data directory, checks every
//! write acknowledged in earlier rounds, then fires a burst of concurrent
//! writes (tenant, plan, join token, enrolment: the last touches three
//! tables at once) and kills the process with SIGKILL at a moment drawn
//! from a seeded PRNG. A write counts as acknowledged only once its 2xx
//! answer was read in full. The seed is printed, and `CROPS_DURABILITY_SEED`
//! replays a failing run.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use serde_json::{json, Value};
use smol::net::TcpStream;

use crate::harness::{temp_dir, ADMIN};

const ROUNDS: u32 = 8;
/// Concurrent writers in a burst.
const WRITERS: usize = 12;

/// splitmix64: a tiny, seedable PRNG (the kill moment must be replayable).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The real binary on `data`, and where it listens.
pub(crate) struct Orchestrator {
    child: Child,
    pub(crate) addr: SocketAddr,
    pub(crate) log: PathBuf,
}

impl Orchestrator {
    pub(crate) fn start(data: &Path, round: u32) -> Self {
        let log = data.with_extension(format!("round{round}.log"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_crops-orchestrator"))
            .args(["serve", "--listen", "127.0.0.1:0", "--admin-token", ADMIN])
            .arg("--data")
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = loop {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the orchestrator exited before listening:\n{}", read(&log));
            };
            if let Some(url) = line.strip_prefix("listening on http://") {
                break url.parse().unwrap();
            }
        };
        Self { child, addr, log }
    }

    /// `kill -9`: no flush, no goodbye.
    pub(crate) fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

pub(crate) fn read(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    text
}

/// One HTTP exchange that may fail (the server may die mid-way): the
/// status and JSON body of a complete answer, or `None`.
pub(crate) async fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Option<(u16, Value)> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(req.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.ok()?;
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&raw[..split]).to_string();
        let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
        let len: usize = head.lines().find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .and_then(|v| v.trim().parse().ok())
        })?;
        let rest = &raw[split + 4..];
        if rest.len() != len {
            return None; // cut short: not an answer
        }
        let json = if rest.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(rest).ok()?
        };
        Some((status, json))
    };
    exchange
        .or(async {
            smol::Timer::after(Duration::from_secs(20)).await;
            None
        })
        .await
}

/// What a writer was told was done.
#[derive(Debug, Default, Clone)]
struct Acked {
    /// (tenant id, name)
    tenants: Vec<(String, String)>,
    /// tenant id -> plan name
    plans: Vec<(String, String)>,
    /// join tokens not (acknowledged as) used
    tokens: Vec<(String, String)>,
    /// (worker id, tenant id, credential, join token)
    workers: Vec<(String, String, String, String)>,
}

/// One writer: tenant, plan, join token, enrolment, again, until the
/// server dies. Records each acknowledged step.
async fn writer(addr: SocketAddr, tag: String, acked: Arc<Mutex<Acked>>) {
    for n in 0.. {
        let name = format!("{tag}-{n}");
        let Some((201, t)) =
            try_http(addr, "POST", "/v1/tenants", Some(json!({ "name": name }))).await
        else {
            return;
        };
        let id = t["id"].as_str().unwrap().to_owned();
        acked
            .lock()
            .unwrap()
            .tenants
            .push((id.clone(), name.clone()));
        let plan = ["starter", "pro", "enterprise"][n % 3];
        let path = format!("/v1/tenants/{id}/plan");
        let Some((200, _)) = try_http(addr, "PUT", &path, Some(json!({ "name": plan }))).await
        else {
            return;
        };
        acked
            .lock()
            .unwrap()
            .plans
            .push((id.clone(), plan.to_owned()));
        let path = format!("/v1/tenants/{id}/join-tokens");
        let Some((201, token)) = try_http(addr, "POST", &path, Some(json!({}))).await else {
            return;
        };
        let token = token["token"].as_str().unwrap().to_owned();
        acked
            .lock()
            .unwrap()
            .tokens
            .push((id.clone(), token.clone()));
        let body = json!({ "joinToken": token, "name": name });
        let Some((201, enrolled)) = try_http(addr, "POST", "/v1/enroll", Some(body)).await else {
            return;
        };
        let mut a = acked.lock().unwrap();
        a.tokens.retain(|(_, t)| *t != token);
        a.workers.push((
            enrolled["workerId"].as_str().unwrap().to_owned(),
            id,
            enrolled["credential"].as_str().unwrap().to_owned(),
            token,
        ));
    }
}

/// Check every acknowledged write after a restart, and that what is
/// there is whole. Uses up the remaining join tokens (proving them stored).
async fn verify(o: &Orchestrator, acked: &mut Acked) {
    let addr = o.addr;
    let fail = |what: String| -> ! { panic!("{what}\norchestrator log:\n{}", read(&o.log)) };
    let (status, tenants) = try_http(addr, "GET", "/v1/tenants", None).await.unwrap();
    assert_eq!(status, 200, "{tenants}");
    let listed: Vec<&Value> = tenants["tenants"].as_array().unwrap().iter().collect();
    for (id, name) in &acked.tenants {
        match listed.iter().find(|t| t["id"] == id.as_str()) {
            Some(t) if t["name"] == name.as_str() => {}
            other => fail(format!("acknowledged tenant {id} {name} is {other:?}")),
        }
    }
    for (id, plan) in &acked.plans {
        let t = listed.iter().find(|t| t["id"] == id.as_str()).unwrap();
        if t["plan"]["name"] != plan.as_str() {
            fail(format!("acknowledged plan {plan} of {id} lost: {t}"));
        }
    }
    // Every stored tenant is whole: its name is also taken in the name index.
    for t in &listed {
        let again = json!({ "name": t["name"] });
        let (status, body) = try_http(addr, "POST", "/v1/tenants", Some(again))
            .await
            .unwrap();
        if status != 409 {
            fail(format!(
                "tenant {t} without its name index: {status} {body}"
            ));
        }
    }
    let (_, workers) = try_http(addr, "GET", "/v1/workers", None).await.unwrap();
    let workers = workers["workers"].as_array().unwrap();
    for (id, tenant, credential, token) in &acked.workers {
        let Some(w) = workers.iter().find(|w| w["id"] == id.as_str()) else {
            fail(format!("acknowledged worker {id} lost"));
        };
        assert_eq!(w["tenantId"], tenant.as_str());
        // Its credential is known (400: no upgrade headers, but past the check)…
        let (status, body) = agent_check(addr, credential).await;
        if status != 400 {
            fail(format!("credential of worker {id}: {status} {body}"));
        }
        // …and its join token is spent.
        let body = json!({ "joinToken": token, "name": "again" });
        let (status, body) = try_http(addr, "POST", "/v1/enroll", Some(body))
            .await
            .unwrap();
        if status != 401 || body["error"]["message"] != "join token already used" {
            fail(format!("join token of worker {id}: {status} {body}"));
        }
    }
    // Every stored worker is whole: its tenant exists.
    for w in workers {
        if !listed.iter().any(|t| t["id"] == w["tenantId"]) {
            fail(format!("worker without its tenant: {w}"));
        }
    }
    // Acknowledged, unused join tokens are stored and unused: enrol with them now.
    for (tenant, token) in std::mem::take(&mut acked.tokens) {
        let body = json!({ "joinToken": token, "name": "late" });
        let (status, enrolled) = try_http(addr, "POST", "/v1/enroll", Some(body))
            .await
            .unwrap();
        match status {
            201 => acked.workers.push((
                enrolled["workerId"].as_str().unwrap().to_owned(),
                tenant,
                enrolled["credential"].as_str().unwrap().to_owned(),
                token,
            )),
            // Used by an enrolment whose answer was lost to the kill: then
            // its worker must exist, whole.
            401 if enrolled["error"]["message"] == "join token already used" => {
                if !workers.iter().any(|w| w["tenantId"] == tenant.as_str()) {
                    fail(format!("token of {tenant} used but no worker enrolled"));
                }
            }
            _ => fail(format!(
                "acknowledged join token of {tenant}: {status} {enrolled}"
            )),
        }
    }
}

/// `GET /v1/agent` with a credential and no upgrade headers.
async fn agent_check(addr: SocketAddr, credential: &str) -> (u16, Value) {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "GET /v1/agent HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {credential}\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&raw[..split]).to_string();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (
            status,
            serde_json::from_slice(&raw[split + 4..]).unwrap_or(Value::Null),
        )
    };
    crate::harness::within(Duration::from_secs(10), "the credential check", exchange).await
}

#[test]
fn acknowledged_writes_survive_kill_9_at_a_random_moment_and_none_is_half_applied() {
    let seed = std::env::var("CROPS_DURABILITY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(crate::harness::now_ms);
    println!("durability seed: {seed} (replay with CROPS_DURABILITY_SEED={seed})");
    let mut rng = Rng(seed);
    let data = temp_dir("durability").join("data");
    let mut acked = Acked::default();
    smol::block_on(async {
        for round in 0..ROUNDS {
            let o = Orchestrator::start(&data, round);
            verify(&o, &mut acked).await;
            let shared = Arc::new(Mutex::new(Acked::default()));
            let writers: Vec<_> = (0..WRITERS)
                .map(|w| {
                    smol::spawn(writer(
                        o.addr,
                        format!("r{round}-w{w}"),
                        Arc::clone(&shared),
                    ))
                })
                .collect();
            // The kill moment: anywhere in the first 400 ms of the burst.
            let delay = Duration::from_millis(20 + rng.below(400));
            smol::Timer::after(delay).await;
            o.kill9();
            for w in writers {
                w.await;
            }
            let got = shared.lock().unwrap().clone();
            println!(
                "round {round}: killed after {delay:?}; acknowledged {} tenants, {} plans, {} enrolments",
                got.tenants.len(),
                got.plans.len(),
                got.workers.len()
            );
            acked.tenants.extend(got.tenants);
            acked.plans.extend(got.plans);
            acked.tokens.extend(got.tokens);
            acked.workers.extend(got.workers);
        }
        let o = Orchestrator::start(&data, ROUNDS);
        verify(&o, &mut acked).await;
        assert!(!acked.tenants.is_empty(), "no write was ever acknowledged");
        o.kill9();
    });
    let _ = std::fs::remove_dir_all(data.parent().unwrap());
}
