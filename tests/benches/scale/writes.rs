//! Durable API writes against one deployment, through its front door:
//! `POST /v1/tenants/{id}/join-tokens` (one write transaction, committed
//! durably before the answer) at 1, 16 and 64 concurrent keep-alive TLS
//! clients, then `POST /v1/enroll` (a heavier transaction) at 64. Each
//! deployment's figures become a column of one Markdown table.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::client::{Api, Certs, ClientError};

/// The concurrency levels of the join-token writes.
pub const CLIENTS: [usize; 3] = [1, 16, 64];
/// The concurrency of enrolment.
pub const ENROL_CLIENTS: usize = 64;

/// One measured burst.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rate {
    pub n: usize,
    pub wall: Duration,
    pub p50: Duration,
    pub p99: Duration,
    /// Calls answered 503 `admission_contended` and sent again (the
    /// latency of a call counts from its first attempt).
    pub retried: usize,
}

impl Rate {
    pub fn per_sec(&self) -> f64 {
        self.n as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// A table cell: `1234/s (p50 1.0, p99 3.2 ms)`, and the retries.
    fn cell(&self) -> String {
        let retried = match self.retried {
            0 => String::new(),
            n => format!(", {n} retried after 503"),
        };
        format!(
            "{:.0}/s (p50 {:.1}, p99 {:.1} ms{retried})",
            self.per_sec(),
            self.p50.as_secs_f64() * 1000.0,
            self.p99.as_secs_f64() * 1000.0
        )
    }
}

/// What one deployment did, and what its fleet may use next.
pub struct Measured {
    /// Join tokens at each of [`CLIENTS`], then enrolment.
    pub tokens: Vec<Rate>,
    pub enrol: Rate,
    pub tenant: String,
    /// Tokens minted and not used for the measured enrolment.
    pub spare_tokens: Vec<String>,
    /// Credentials of the workers enrolled by the measurement.
    pub credentials: Vec<String>,
}

/// Latency percentile of a sorted list.
fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len().saturating_sub(1)) as f64 * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

/// Attempts of one call answered 503 `admission_contended` before the
/// bench gives up: the answer says to retry, as a client would.
const RETRIES: usize = 100;

/// `n` calls of `make(i)` spread over `clients` connections to `addr`;
/// the rate and latencies, and what the calls answered, in order. A call
/// answered 503 `admission_contended` (a tenant's usage changed under
/// each of the orchestrator's admission rounds: enrolments of one tenant
/// on several replicas at once) is sent again and counted.
pub async fn burst(
    addr: SocketAddr,
    certs: &Certs,
    token: &str,
    n: usize,
    clients: usize,
    make: impl Fn(usize) -> (&'static str, String, Value) + Send + Sync + 'static,
) -> Result<(Rate, Vec<Value>), ClientError> {
    let make = Arc::new(make);
    let connector = certs.connector();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut api = Api::connect(addr, &connector, token).await?;
        let make = Arc::clone(&make);
        tasks.push(smol::spawn(async move {
            let (mut out, mut retried) = (Vec::new(), 0);
            for i in (c..n).step_by(clients) {
                let (method, path, body) = make(i);
                let t = Instant::now();
                let mut attempt = 0;
                let answer = loop {
                    match api.call(method, &path, Some(&body)).await {
                        Err(ClientError::Status {
                            status: 503, body, ..
                        }) if body.contains("admission_contended") && attempt < RETRIES => {
                            attempt += 1;
                            retried += 1;
                        }
                        other => break other?,
                    }
                };
                out.push((i, t.elapsed(), answer));
            }
            Ok::<_, ClientError>((out, retried))
        }));
    }
    let (mut all, mut retried) = (Vec::with_capacity(n), 0);
    for task in tasks {
        let (out, r) = task.await?;
        all.extend(out);
        retried += r;
    }
    let wall = started.elapsed();
    all.sort_by_key(|(i, _, _)| *i);
    let mut latencies: Vec<Duration> = all.iter().map(|(_, d, _)| *d).collect();
    latencies.sort();
    let rate = Rate {
        n,
        wall,
        p50: pct(&latencies, 0.5),
        p99: pct(&latencies, 0.99),
        retried,
    };
    Ok((rate, all.into_iter().map(|(_, _, v)| v).collect()))
}

/// A string field of each answer.
pub fn field(answers: Vec<Value>, name: &str) -> Vec<String> {
    answers
        .into_iter()
        .map(|v| v[name].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// A tenant with a plan without limits (thousands of self-hosted workers).
pub async fn tenant(front: SocketAddr, certs: &Certs, admin: &str) -> Result<String, ClientError> {
    let mut api = Api::connect(front, &certs.connector(), admin).await?;
    let tenant = api
        .call("POST", "/v1/tenants", Some(&json!({ "name": "fleet" })))
        .await?;
    let tenant = tenant["id"].as_str().unwrap_or_default().to_owned();
    let plan = json!({ "name": "enterprise" });
    api.call("PUT", &format!("/v1/tenants/{tenant}/plan"), Some(&plan))
        .await?;
    Ok(tenant)
}

/// Mint `n` join tokens of `tenant` at `clients`.
pub async fn mint(
    front: SocketAddr,
    certs: &Certs,
    admin: &str,
    tenant: &str,
    n: usize,
    clients: usize,
) -> Result<(Rate, Vec<String>), ClientError> {
    let path = format!("/v1/tenants/{tenant}/join-tokens");
    let (rate, answers) = burst(front, certs, admin, n, clients, move |_| {
        ("POST", path.clone(), json!({ "ttlSecs": 3600 }))
    })
    .await?;
    Ok((rate, field(answers, "token")))
}

/// Enrol one worker per token at [`ENROL_CLIENTS`]; worker `first + k` for
/// the `k`th. The rate and the credentials.
pub async fn enrol(
    front: SocketAddr,
    certs: &Certs,
    tokens: Vec<String>,
    first: usize,
) -> Result<(Rate, Vec<String>), ClientError> {
    let tokens = Arc::new(tokens);
    let n = tokens.len();
    let (rate, answers) = burst(front, certs, "none", n, ENROL_CLIENTS, move |k| {
        let body = json!({ "joinToken": tokens[k], "name": format!("sim-{}", first + k) });
        ("POST", "/v1/enroll".to_owned(), body)
    })
    .await?;
    Ok((rate, field(answers, "credential")))
}

/// `writes` join tokens at each of [`CLIENTS`], then `writes` enrolments.
pub async fn measure(
    front: SocketAddr,
    certs: &Certs,
    admin: &str,
    writes: usize,
) -> Result<Measured, ClientError> {
    let tenant = tenant(front, certs, admin).await?;
    let mut rates = Vec::new();
    let mut tokens = Vec::new();
    for clients in CLIENTS {
        let (rate, minted) = mint(front, certs, admin, &tenant, writes, clients).await?;
        rates.push(rate);
        tokens.extend(minted);
    }
    let spare_tokens = tokens.split_off(writes.min(tokens.len()));
    let (enrol, credentials) = enrol(front, certs, tokens, 0).await?;
    Ok(Measured {
        tokens: rates,
        enrol,
        tenant,
        spare_tokens,
        credentials,
    })
}

/// The side-by-side table: a column per deployment.
pub fn print_table(names: &[&str], results: &[&Measured], writes: usize) {
    println!(
        "### API write throughput (durable commits, TLS, keep-alive; {writes} writes a row)\n"
    );
    println!("| write | clients | {} |", names.join(" | "));
    println!("|---|---|{}", "---|".repeat(names.len()));
    for (row, clients) in CLIENTS.iter().enumerate() {
        let cells: Vec<String> = results.iter().map(|m| m.tokens[row].cell()).collect();
        println!("| mint a join token | {clients} | {} |", cells.join(" | "));
    }
    let cells: Vec<String> = results.iter().map(|m| m.enrol.cell()).collect();
    println!(
        "| enrol a worker | {ENROL_CLIENTS} | {} |",
        cells.join(" | ")
    );
    // The goal: on PostgreSQL at least 3x redb's rate at 64 clients.
    let at64 = |m: &Measured| m.tokens[CLIENTS.len() - 1].per_sec();
    if let Some(redb) = names.iter().position(|n| *n == "redb") {
        let ratios: Vec<String> = names
            .iter()
            .zip(results)
            .filter(|(n, _)| **n != "redb")
            .map(|(name, m)| format!("{name} {:.2}x", at64(m) / at64(results[redb]).max(1e-9)))
            .collect();
        if !ratios.is_empty() {
            println!(
                "\njoin tokens at 64 clients over redb's rate: {} (goal on PostgreSQL: at least 3x)",
                ratios.join(", ")
            );
        }
    }
}
