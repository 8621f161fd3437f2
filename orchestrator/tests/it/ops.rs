//! The operations endpoints: `/metrics` parses as Prometheus text and its
//! counters move when a command is relayed; `/healthz` answers anyone;
//! `/readyz` turns 503 the moment shutdown begins, while the listener
//! still accepts during the drain period.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::fake::*;
use crate::harness::*;

/// Parse the text exposition format strictly enough to catch a broken
/// encoder: every sample belongs to a family whose `# TYPE` came first,
/// names and labels are well formed, values are numbers. Returns each
/// sample as `name{labels}` -> value.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name, value) = (parts.next(), parts.next(), parts.next());
            let name = name.unwrap_or_else(|| panic!("comment without a name: {line}"));
            assert!(valid_name(name), "bad family name: {line}");
            match kind {
                Some("HELP") => {}
                Some("TYPE") => {
                    let value = value.unwrap_or_default();
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&value),
                        "bad type: {line}"
                    );
                    assert!(
                        types.insert(name.to_owned(), value.to_owned()).is_none(),
                        "TYPE twice: {line}"
                    );
                }
                _ => panic!("unknown comment: {line}"),
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (
                name,
                labels
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line}")),
            ),
            None => (series, ""),
        };
        assert!(valid_name(name), "bad sample name: {line}");
        let mut rest = labels;
        while !rest.is_empty() {
            let (key, after) = rest
                .split_once("=\"")
                .unwrap_or_else(|| panic!("bad label: {line}"));
            assert!(valid_name(key), "bad label name: {line}");
            let mut end = None;
            let mut escaped = false;
            for (i, c) in after.char_indices() {
                match (escaped, c) {
                    (true, _) => escaped = false,
                    (false, '\\') => escaped = true,
                    (false, '"') => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let end = end.unwrap_or_else(|| panic!("unterminated label value: {line}"));
            rest = after[end + 1..]
                .strip_prefix(',')
                .unwrap_or(&after[end + 1..]);
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        assert!(
            types.contains_key(family),
            "sample before its # TYPE: {line}"
        );
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "sample twice: {line}"
        );
    }
    samples
}

async fn scrape(server: &Server) -> BTreeMap<String, f64> {
    let (status, body) = http_raw(server.addr, "GET", "/metrics", &[], None).await;
    let text = String::from_utf8(body).expect("metrics are UTF-8");
    assert_eq!(status, 200, "{text}");
    parse_prometheus(&text)
}

fn get(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

#[test]
fn metrics_parse_and_count_relayed_commands() {
    smol::block_on(async {
        let mut fx = Fixture::start("metrics").await;
        let before = scrape(&fx.server).await;
        assert_eq!(get(&before, "crops_up"), 1.0);
        assert_eq!(get(&before, "crops_workers_online"), 1.0);
        assert_eq!(get(&before, "crops_workers_connected"), 1.0);
        assert_eq!(get(&before, "crops_agent_sockets_open"), 1.0);
        for outcome in ["placed", "denied", "no_fit", "failed"] {
            let series = format!("crops_policy_decisions_total{{outcome=\"{outcome}\"}}");
            assert_eq!(before.get(&series), Some(&0.0), "{series}");
        }

        let path = format!("/v1/workers/{}/images", fx.worker_id);
        let listing = json!({ "images": [] });
        let (status, body, _) = fx.relay("GET", &path, None, "images.list", listing).await;
        assert_eq!(status, 200, "{body}");
        let task = fx.spawn("GET", &path, None);
        let cmd = next_command(&mut fx.agent).await;
        answer_error(&mut fx.agent, &cmd, "engine_failed", "podman is broken").await;
        assert_eq!(task.await.0, 502);

        let after = scrape(&fx.server).await;
        let ok = "crops_commands_total{type=\"images.list\",outcome=\"ok\"}";
        let failed = "crops_commands_total{type=\"images.list\",outcome=\"agent_error\"}";
        assert_eq!(get(&after, ok) - get(&before, ok), 1.0);
        assert_eq!(get(&after, failed) - get(&before, failed), 1.0);
        let count = "crops_command_duration_seconds_count{type=\"images.list\"}";
        assert_eq!(get(&after, count), 2.0);
        let inf = "crops_command_duration_seconds_bucket{type=\"images.list\",le=\"+Inf\"}";
        assert_eq!(get(&after, inf), 2.0);
        let route =
            "crops_http_requests_total{route=\"/v1/workers/{workerId}/images\",method=\"GET\"";
        assert_eq!(get(&after, &format!("{route},code=\"2xx\"}}")), 1.0);
        assert_eq!(get(&after, &format!("{route},code=\"5xx\"}}")), 1.0);
        let scrapes = "crops_http_requests_total{route=\"/metrics\",method=\"GET\",code=\"2xx\"}";
        assert_eq!(get(&after, scrapes), 1.0, "the first scrape is counted");
        assert_eq!(get(&after, "crops_commands_in_flight"), 0.0);
        fx.stop().await;
    });
}

#[test]
fn an_agent_leaving_is_seen_in_the_gauges() {
    smol::block_on(async {
        let fx = Fixture::start("metrics-gauges").await;
        let Fixture { server, agent, .. } = fx;
        agent.close().await;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let samples = scrape(&server).await;
            if get(&samples, "crops_agent_sockets_open") == 0.0
                && get(&samples, "crops_workers_online") == 0.0
            {
                break;
            }
            assert!(Instant::now() < deadline, "gauges stayed up: {samples:?}");
            smol::Timer::after(Duration::from_millis(20)).await;
        }
        server.stop().await;
    });
}

#[test]
fn healthz_and_readyz_answer_without_credentials() {
    smol::block_on(async {
        let server = Server::start("readyz").await;
        let (status, body) = http(server.addr, "GET", "/healthz", &[], None).await;
        assert_eq!((status, body), (200, json!({ "status": "ok" })));
        assert_eq!(
            server.until_ready(Duration::from_secs(5)).await,
            json!({ "status": "ready" })
        );
        server.stop().await;
    });
}

#[test]
fn readyz_turns_503_as_shutdown_begins_while_still_accepting() {
    smol::block_on(async {
        let opts = Options {
            drain: Duration::from_secs(3),
            ..Options::default()
        };
        let server = Server::start_in(temp_dir("readyz-drain"), opts).await;
        server.until_ready(Duration::from_secs(5)).await;
        server.begin_stop();
        let deadline = Instant::now() + Duration::from_secs(2);
        let body = loop {
            let (status, body) = http(server.addr, "GET", "/readyz", &[], None).await;
            if status == 503 {
                break body;
            }
            assert!(Instant::now() < deadline, "readyz stayed {status}: {body}");
            smol::Timer::after(Duration::from_millis(10)).await;
        };
        assert_error(503, &body, 503, "not_ready");
        // Draining: still accepting, still alive, and saying so in the metrics.
        let (status, _) = http(server.addr, "GET", "/healthz", &[], None).await;
        assert_eq!(status, 200);
        assert_eq!(get(&scrape(&server).await, "crops_up"), 0.0);
        server.stop().await;
    });
}

/// The real binary's log written to a file (stderr not a terminal) is
/// plain text: no ANSI colour codes.
#[test]
fn the_log_written_to_a_file_carries_no_colour_codes() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let data = temp_dir("ops-log-colour");
    let log = data.with_extension("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_crops-orchestrator"))
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-token", ADMIN])
        .arg("--data")
        .arg(&data)
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("the log file"))
        .spawn()
        .expect("start the orchestrator");
    let stdout = child.stdout.take().expect("stdout");
    let listening = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.starts_with("listening on"));
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).expect("the log");
    assert!(listening, "the orchestrator did not start:\n{text}");
    assert!(text.contains("serving"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "colour codes in a log file:\n{text}"
    );
}
