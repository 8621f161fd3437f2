//! Operational metrics, kept in memory and rendered at `GET /metrics` in the
//! Prometheus text exposition format (version 0.0.4).
//!
//! One [`Metrics`] per serve, shared through an `Arc`: the hub counts the
//! commands it relays (by type and outcome, with a latency histogram per
//! type), each agent connection task holds a [`SocketGuard`], the HTTP layer
//! counts requests by route pattern and status class, and the scheduler
//! (`scheduling`) counts each policy decision by outcome. Gauges that
//! are a view of other state (workers online) are sampled at scrape time
//! and passed to [`Metrics::render`].
//!
//! Label values come from small closed sets (command types, route patterns
//! of the route table, outcomes), never from ids or tenant names, so the
//! series count stays bounded whatever clients send.
//!
//! ```text
//! # TYPE crops_commands_total counter
//! crops_commands_total{type="container.start",outcome="ok"} 3
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Upper bounds of the command latency buckets, in seconds: from a fast
/// `container.start` to a 15 minute image build.
const LATENCY_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0,
];

/// How a relayed command ended, as the `outcome` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// The agent answered with a result.
    Ok,
    /// The agent answered with an `error`.
    AgentError,
    /// No answer within the command's deadline.
    Timeout,
    /// The worker was not connected: nothing was sent.
    Offline,
    /// The connection dropped before the answer.
    Disconnected,
    /// The orchestrator failed before sending.
    Internal,
    /// The agent's reply named the request but did not decode.
    BadReply,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::AgentError => "agent_error",
            Self::Timeout => "timeout",
            Self::Offline => "offline",
            Self::Disconnected => "disconnected",
            Self::Internal => "internal",
            Self::BadReply => "bad_reply",
        }
    }

    /// Whether the command reached the wire (and so has a latency).
    fn was_sent(self) -> bool {
        !matches!(self, Self::Offline | Self::Internal)
    }
}

/// Why the listener closed a connection that had not authenticated
/// (`crate::connections`), the closed set of
/// `crops_connections_shed_total`'s label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// Its source's cap was reached and it was that source's oldest.
    PerSource = 0,
    /// The total cap was reached and it was the oldest.
    Total = 1,
    /// No first request within the deadline.
    FirstRequest = 2,
}

const SHED_REASONS: [&str; 3] = ["per_source", "total", "first_request"];

/// The outcomes of a scheduling decision (`scheduling`), the closed set
/// of `crops_policy_decisions_total`'s label; anything else counts as `other`.
const POLICY_OUTCOMES: [&str; 5] = ["placed", "denied", "no_fit", "failed", "other"];

/// Counts per bucket (not cumulative), their sum and count.
#[derive(Debug, Default, Clone)]
struct Histogram {
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        if let Some(i) = LATENCY_BUCKETS.iter().position(|le| secs <= *le) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum += secs;
    }
}

/// What one command type has seen.
#[derive(Debug, Default, Clone)]
struct CommandStats {
    outcomes: BTreeMap<Outcome, u64>,
    latency: Histogram,
}

/// The values sampled from other state when `/metrics` is scraped.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sampled {
    /// Registered connections whose last heartbeat is recent enough.
    pub workers_online: usize,
    /// Registered connections, online or not.
    pub workers_connected: usize,
    /// Requests awaiting an agent's reply.
    pub commands_in_flight: usize,
    /// Whether `/readyz` answers 200 now.
    pub ready: bool,
    /// Store writes run again after losing a conflict, and writes given up
    /// after too many (`Store::conflicts`).
    pub store_conflicts: (u64, u64),
}

/// Every counter of one serve. Shared by the hub, the connection tasks and
/// the HTTP layer; each field is written by the one place its doc names and
/// read only by [`Metrics::render`]. Nothing here needs shutdown: the
/// registry dies with the last `Arc`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Agent WebSocket connections open now, registered or not. Changed
    /// only by [`SocketGuard`]s (one per connection task).
    sockets_open: AtomicI64,
    /// Relayed commands by type. Written by `Hub::request_with_events`.
    commands: Mutex<BTreeMap<&'static str, CommandStats>>,
    /// HTTP requests by (route template, method, status class). Written by
    /// `router::handle`, once per answered request.
    http: Mutex<BTreeMap<(&'static str, &'static str, &'static str), u64>>,
    /// Policy decisions by outcome, indexed as [`POLICY_OUTCOMES`]. Written
    /// by `scheduling` as it records each decision.
    policy: [AtomicU64; POLICY_OUTCOMES.len()],
    /// Connections not yet authenticated. Set by `connections::Gate`.
    unauthenticated: AtomicI64,
    /// Unauthenticated connections closed, indexed as [`SHED_REASONS`].
    /// Written by `connections`.
    shed: [AtomicU64; SHED_REASONS.len()],
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each change is a single increment, so a poisoned map is still consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Metrics {
    /// Count one relayed command of type `ty` that ended with `outcome`
    /// after `elapsed` (the latency is recorded only if it was sent).
    pub fn command(&self, ty: &'static str, outcome: Outcome, elapsed: Duration) {
        let mut commands = locked(&self.commands);
        let stats = commands.entry(ty).or_default();
        *stats.outcomes.entry(outcome).or_default() += 1;
        if outcome.was_sent() {
            stats.latency.observe(elapsed.as_secs_f64());
        }
    }

    /// Count one answered HTTP request; `route` is the matched route's
    /// path pattern (e.g. `/v1/containers/{containerId}`), `None` if none
    /// matched.
    pub fn http_request(&self, route: Option<&'static str>, method: &hyper::Method, status: u16) {
        let key = (
            route.unwrap_or("unmatched"),
            method_label(method),
            status_class(status),
        );
        *locked(&self.http).entry(key).or_default() += 1;
    }

    /// Count one policy decision by its recorded outcome.
    pub fn policy_decision(&self, outcome: &str) {
        let last = POLICY_OUTCOMES.len() - 1;
        let i = POLICY_OUTCOMES[..last]
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or(last);
        self.policy[i].fetch_add(1, Ordering::Relaxed);
    }

    /// How many connections have not authenticated now.
    pub fn set_unauthenticated(&self, n: usize) {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        self.unauthenticated.store(n, Ordering::Relaxed);
    }

    /// Count one unauthenticated connection closed by the listener.
    pub fn connection_shed(&self, why: Shed) {
        self.shed[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A guard counting one open agent socket until it is dropped.
    pub fn socket_opened(self: &Arc<Self>) -> SocketGuard {
        self.sockets_open.fetch_add(1, Ordering::Relaxed);
        SocketGuard(Arc::clone(self))
    }

    /// Agent sockets open now.
    pub fn sockets_open(&self) -> i64 {
        self.sockets_open.load(Ordering::Relaxed)
    }

    /// The whole registry as Prometheus text, with `sampled` gauges.
    pub fn render(&self, sampled: Sampled) -> String {
        let mut w = Writer(String::with_capacity(4096));
        w.family(
            "crops_up",
            "gauge",
            "1 while the listener accepts and shutdown has not begun, else 0.",
        );
        w.sample("crops_up", &[], u64::from(sampled.ready));
        w.family(
            "crops_workers_online",
            "gauge",
            "Registered agent connections with a heartbeat within 3 intervals.",
        );
        w.sample("crops_workers_online", &[], sampled.workers_online);
        w.family(
            "crops_workers_connected",
            "gauge",
            "Registered agent connections, online or not.",
        );
        w.sample("crops_workers_connected", &[], sampled.workers_connected);
        w.family(
            "crops_agent_sockets_open",
            "gauge",
            "Agent WebSocket connections open now, registered or not.",
        );
        w.sample("crops_agent_sockets_open", &[], self.sockets_open().max(0));
        w.family(
            "crops_connections_unauthenticated",
            "gauge",
            "Connections accepted that no request has authenticated yet.",
        );
        let unauthenticated = self.unauthenticated.load(Ordering::Relaxed).max(0);
        w.sample("crops_connections_unauthenticated", &[], unauthenticated);
        w.family(
            "crops_connections_shed_total",
            "counter",
            "Unauthenticated connections closed: evicted by a full cap (per_source, total) or silent past the first-request deadline.",
        );
        for (reason, n) in SHED_REASONS.iter().zip(&self.shed) {
            let n = n.load(Ordering::Relaxed);
            w.sample("crops_connections_shed_total", &[("reason", reason)], n);
        }
        w.family(
            "crops_commands_in_flight",
            "gauge",
            "Commands sent to agents and awaiting their reply.",
        );
        w.sample("crops_commands_in_flight", &[], sampled.commands_in_flight);
        w.family(
            "crops_store_write_conflicts_total",
            "counter",
            "Store writes that lost a serialization conflict with a concurrent writer (PostgreSQL): run again (retried) or, after too many in a row, answered 503 (gave_up).",
        );
        let (retried, gave_up) = sampled.store_conflicts;
        w.sample(
            "crops_store_write_conflicts_total",
            &[("outcome", "retried")],
            retried,
        );
        w.sample(
            "crops_store_write_conflicts_total",
            &[("outcome", "gave_up")],
            gave_up,
        );

        let commands = locked(&self.commands).clone();
        w.family(
            "crops_commands_total",
            "counter",
            "Commands relayed to agents, by type and outcome.",
        );
        for (ty, stats) in &commands {
            for (outcome, n) in &stats.outcomes {
                let labels = [("type", *ty), ("outcome", outcome.as_str())];
                w.sample("crops_commands_total", &labels, *n);
            }
        }
        w.family(
            "crops_command_duration_seconds",
            "histogram",
            "Time from sending a command to its answer, by type.",
        );
        for (ty, stats) in &commands {
            w.histogram("crops_command_duration_seconds", ty, &stats.latency);
        }

        w.family(
            "crops_http_requests_total",
            "counter",
            "HTTP requests answered, by route template, method and status class.",
        );
        for ((route, method, class), n) in locked(&self.http).iter() {
            let labels = [("route", *route), ("method", method), ("code", class)];
            w.sample("crops_http_requests_total", &labels, *n);
        }

        w.family(
            "crops_policy_decisions_total",
            "counter",
            "Scheduling policy decisions, by outcome (zero until one is made).",
        );
        for (outcome, n) in POLICY_OUTCOMES.iter().zip(&self.policy) {
            let n = n.load(Ordering::Relaxed);
            w.sample("crops_policy_decisions_total", &[("outcome", outcome)], n);
        }

        if let Some(rss) = resident_bytes() {
            w.family(
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory of the orchestrator process.",
            );
            w.sample("process_resident_memory_bytes", &[], rss);
        }
        w.0
    }
}

/// Decrements the open socket gauge when the connection task ends.
#[derive(Debug)]
pub struct SocketGuard(Arc<Metrics>);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        self.0.sockets_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Text exposition output: family heads, then their samples.
struct Writer(String);

impl Writer {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample line: `name{k="v",...} value`.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// A histogram's cumulative buckets, sum and count for one type.
    fn histogram(&mut self, name: &str, ty: &str, h: &Histogram) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (le, n) in LATENCY_BUCKETS.iter().zip(h.buckets) {
            cumulative += n;
            let le = le.to_string();
            self.sample(&bucket, &[("type", ty), ("le", le.as_str())], cumulative);
        }
        self.sample(&bucket, &[("type", ty), ("le", "+Inf")], h.count);
        self.sample(&format!("{name}_sum"), &[("type", ty)], h.sum);
        self.sample(&format!("{name}_count"), &[("type", ty)], h.count);
    }
}

/// A label value escaped as the text format asks: `\`, `"` and newlines.
fn escape(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

fn method_label(method: &hyper::Method) -> &'static str {
    use hyper::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn status_class(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

/// The process's resident set, from `/proc/self/status` (Linux only).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), r#"a\"b\\c\nd"#);
    }

    #[test]
    fn counters_and_histograms_render() {
        let m = Arc::new(Metrics::default());
        m.command("container.start", Outcome::Ok, Duration::from_millis(30));
        m.command("container.start", Outcome::Offline, Duration::ZERO);
        m.http_request(
            Some("/v1/containers/{containerId}"),
            &hyper::Method::GET,
            404,
        );
        let guard = m.socket_opened();
        let text = m.render(Sampled::default());
        assert!(text.contains("crops_commands_total{type=\"container.start\",outcome=\"ok\"} 1\n"));
        assert!(text.contains(
            "crops_command_duration_seconds_bucket{type=\"container.start\",le=\"0.05\"} 1\n"
        ));
        assert!(text.contains(
            "crops_command_duration_seconds_bucket{type=\"container.start\",le=\"0.025\"} 0\n"
        ));
        assert!(text.contains("crops_command_duration_seconds_count{type=\"container.start\"} 1\n"));
        assert!(text.contains(
            "crops_http_requests_total{route=\"/v1/containers/{containerId}\",method=\"GET\",code=\"4xx\"} 1\n"
        ));
        assert!(text.contains("crops_agent_sockets_open 1\n"));
        assert!(text.contains("crops_policy_decisions_total{outcome=\"denied\"} 0\n"));
        m.policy_decision("placed");
        m.policy_decision("made-up");
        let text = m.render(Sampled::default());
        assert!(text.contains("crops_policy_decisions_total{outcome=\"placed\"} 1\n"));
        assert!(text.contains("crops_policy_decisions_total{outcome=\"other\"} 1\n"));
        drop(guard);
        assert_eq!(m.sockets_open(), 0);
    }
}
