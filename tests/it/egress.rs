//! Egress allow-lists, enforced on real containers: a curl inside a
//! Standard or Strict container reaches, over HTTP and HTTPS, exactly the
//! names on its list (servers this test starts on the host's own address
//! under made-up names, all on that one address), and is refused
//! everything else with a `crops egress:` reason or a `403` on its tunnel:
//! other names, raw IP addresses (through the proxy or around it), a name
//! that points at the host's loopback, DNS of its own. Killing the relay
//! as the container's root lifts nothing. A create's own list replaces the
//! tenant's default on a new container; Strict may only narrow the
//! tenant's list. Open reaches the address directly; Offline reaches
//! nothing. The gates come back with a restarted agent. All of it as root
//! and with the agent rootless on the user's rootless Podman. Bad lists are
//! a 400 that creates nothing.

use serde_json::{json, Value};

use crate::fleet::*;
use crate::harness::AgentKind;
use crate::http::Answer;
use crops_e2e::egress::{self, Server, ALLOWED, LOOP, OTHER, WILD};

/// Run `curl ARGS` in container `id`: (exit code, stdout, stderr).
fn curl(fleet: &Fleet, id: &str, args: &[&str]) -> (i64, String, String) {
    let mut argv = vec!["curl", "-sS", "--max-time", "20"];
    argv.extend_from_slice(args);
    let a = fleet.exec(id, &argv);
    assert_eq!(a.status, 200, "{a:?}");
    let text = |k: &str| a.body[k].as_str().unwrap_or_default().to_owned();
    (
        a.body["exitCode"].as_i64().unwrap_or(-1),
        text("stdout"),
        text("stderr"),
    )
}

fn with_ca(fleet: &Fleet, extra: Value, ca: &str) -> String {
    egress::curl_container(fleet, &unique_name(fleet), extra, ca)
}

/// As the container's root: SIGKILL the relay, wait until nothing listens
/// on its port, which means the agent let the listener it was handed go
/// (3128 is 0C38 in /proc/net/tcp, state 0A is LISTEN).
const KILL_RELAY: &str = "for p in /proc/[0-9]*; do \
    [ \"$(cat $p/comm 2>/dev/null)\" = crops-egress ] && kill -9 ${p#/proc/}; done; \
    while grep -q ':0C38 00000000:0000 0A' /proc/net/tcp; do sleep 0.05; done; echo gone";

/// A container name no other container on this host has.
fn unique_name(fleet: &Fleet) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "eg-{}-{}",
        &fleet.tenant[..8],
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn put_list(fleet: &Fleet, list: &[&str]) -> Answer {
    let path = format!("/v1/tenants/{}/allowed-domains", fleet.tenant);
    fleet
        .api
        .request("PUT", &path, Some(json!({ "allowedDomains": list })))
}

#[test]
fn containers_reach_exactly_their_allow_list() {
    reach_exactly_the_list(AgentKind::Root);
}

#[test]
fn rootless_containers_reach_exactly_their_allow_list() {
    reach_exactly_the_list(AgentKind::Rootless);
}

fn reach_exactly_the_list(kind: AgentKind) {
    egress::map_names();
    let mut fleet = Fleet::start_as("egress", kind);
    fleet.set_plan("pro");
    let (http, https) = (Server::http(), Server::https(&fleet.dir));
    let ip = egress::host_ip().to_string();
    let wild = "*.wild.egress.crops.test";
    let set = put_list(&fleet, &[ALLOWED, wild, LOOP]);
    assert_eq!(set.status, 200, "{set:?}");
    let tenant = fleet.api.get(&format!("/v1/tenants/{}", fleet.tenant));
    assert_eq!(
        tenant.body["allowedDomains"],
        json!([ALLOWED, wild, LOOP]),
        "{tenant:?}"
    );

    // Standard, with the tenant's default list.
    let std_id = with_ca(&fleet, json!({ "profile": "standard" }), &https.ca_pem);
    let c = fleet.api.get(&format!("/v1/containers/{std_id}"));
    assert_eq!(
        c.body["allowedDomains"],
        json!([ALLOWED, wild, LOOP]),
        "{c:?}"
    );
    let http_url = |host: &str| format!("http://{host}:{}/x", http.port);
    let https_url = |host: &str| format!("https://{host}:{}/", https.port);
    let ca = ["--cacert", "/workspace/ca.pem"];

    let (code, out, err) = curl(&fleet, &std_id, &[&http_url(ALLOWED)]);
    assert_eq!(
        (code, out.as_str()),
        (0, "hello allowed.egress.crops.test\n"),
        "{err}"
    );
    // HTTPS through the tunnel, verified against the server's own CA: end to end.
    let (code, out, err) = curl(&fleet, &std_id, &[ca[0], ca[1], &https_url(WILD)]);
    assert_eq!(
        (code, out.as_str()),
        (0, "hello api.wild.egress.crops.test\n"),
        "{err}"
    );

    // Another name on the very same address: refused, saying why.
    let (_, out, _) = curl(&fleet, &std_id, &["-w", " %{http_code}", &http_url(OTHER)]);
    assert!(
        out.starts_with(
            "crops egress: other.egress.crops.test is not on this container's allow-list"
        ) && out.ends_with(" 403"),
        "{out}"
    );
    let (code, _, err) = curl(&fleet, &std_id, &[ca[0], ca[1], &https_url(OTHER)]);
    assert!(
        code != 0 && err.contains("CONNECT") && err.contains("403"),
        "{code} {err}"
    );
    // The address itself, through the proxy and around it.
    let (_, out, _) = curl(&fleet, &std_id, &[&http_url(&ip)]);
    assert!(out.contains("is an IP address"), "{out}");
    let (code, _, err) = curl(&fleet, &std_id, &["--noproxy", "*", &http_url(&ip)]);
    assert!(code != 0, "a direct connection must fail: {err}");
    // A listed name that points at the host's loopback reaches nothing.
    let (_, out, _) = curl(&fleet, &std_id, &[&http_url(LOOP)]);
    assert!(
        out.contains("crops egress:") && out.contains("loopback"),
        "{out}"
    );
    // No resolver, no interface but lo: no DNS of its own.
    let dns = fleet.exec(&std_id, &["nslookup", OTHER, &ip]);
    assert_ne!(dns.body["exitCode"], 0, "{dns:?}");
    let nets = fleet.exec(&std_id, &["ls", "/sys/class/net"]);
    assert_eq!(nets.body["stdout"], "lo\n", "{nets:?}");
    // The container's root kills the relay: that lifts nothing.
    let kill = fleet.exec(&std_id, &["sh", "-c", KILL_RELAY]);
    assert_eq!(kill.body["stdout"], "gone\n", "{kill:?}");
    let (code, _, _) = curl(&fleet, &std_id, &[&http_url(ALLOWED)]);
    assert_ne!(code, 0, "without the relay there is no way out");

    // A create's own list, on a new container, replaces the default.
    let own = with_ca(&fleet, json!({ "allowedDomains": [OTHER] }), &https.ca_pem);
    let (code, out, err) = curl(&fleet, &own, &[ca[0], ca[1], &https_url(OTHER)]);
    assert_eq!(
        (code, out.as_str()),
        (0, "hello other.egress.crops.test\n"),
        "{err}"
    );
    let (_, out, _) = curl(&fleet, &own, &[&http_url(ALLOWED)]);
    assert!(
        out.contains("allowed.egress.crops.test is not on this container's allow-list"),
        "{out}"
    );

    // Strict: the tenant's list, narrowed at most; read-only root and all.
    let wider = fleet.create(
        "strict-wide",
        json!({ "profile": "strict", "allowedDomains": [OTHER] }),
    );
    assert_eq!(wider.status, 400, "{wider:?}");
    assert!(
        wider
            .body
            .to_string()
            .contains("does not cover other.egress.crops.test"),
        "{wider:?}"
    );
    let strict = with_ca(
        &fleet,
        json!({ "profile": "strict", "allowedDomains": [WILD] }),
        &https.ca_pem,
    );
    let (code, out, err) = curl(&fleet, &strict, &[ca[0], ca[1], &https_url(WILD)]);
    assert_eq!(
        (code, out.as_str()),
        (0, "hello api.wild.egress.crops.test\n"),
        "{err}"
    );
    let (_, out, _) = curl(&fleet, &strict, &[&http_url(ALLOWED)]);
    assert!(out.contains("not on this container's allow-list"), "{out}");

    // Open reaches the address directly; Offline nothing, and has no proxy.
    let open = with_ca(&fleet, json!({ "profile": "open" }), &https.ca_pem);
    let (code, out, err) = curl(&fleet, &open, &["--noproxy", "*", &http_url(&ip)]);
    assert_eq!((code, out.starts_with("hello")), (0, true), "{err}");
    let offline = fleet.running(
        &unique_name(&fleet),
        json!({ "image": egress::curl_image(), "profile": "offline" }),
    );
    let (code, _, err) = curl(&fleet, &offline, &[&http_url(ALLOWED)]);
    assert_ne!(code, 0, "offline reaches nothing: {err}");

    // A restarted agent serves the gates of the containers it has.
    fleet.kill_agent();
    fleet.start_agent();
    let (code, out, err) = curl(&fleet, &own, &[ca[0], ca[1], &https_url(OTHER)]);
    assert_eq!(
        (code, out.as_str()),
        (0, "hello other.egress.crops.test\n"),
        "{err}"
    );
    remove_tenant_containers(&fleet.tenant);
}

#[test]
fn bad_allow_lists_are_refused_and_create_nothing() {
    let fleet = Fleet::start("egress-bad");
    let too_many: Vec<String> = (0..257).map(|i| format!("h{i}.example.com")).collect();
    for (extra, why) in [
        (
            json!({ "allowedDomains": ["*.com"] }),
            "bare top-level domain",
        ),
        (
            json!({ "allowedDomains": ["10.0.0.1"] }),
            "is an IP address",
        ),
        (
            json!({ "allowedDomains": ["a.*.example.com"] }),
            "whole first label",
        ),
        (
            json!({ "allowedDomains": ["exa mple.com"] }),
            "letters, digits",
        ),
        (json!({ "allowedDomains": too_many }), "at most 256"),
        (
            json!({ "profile": "open", "allowedDomains": ["pypi.org"] }),
            "open one reaches every domain",
        ),
        (
            json!({ "profile": "offline", "allowedDomains": ["pypi.org"] }),
            "offline one has no network",
        ),
    ] {
        let a = fleet.create("bad-list", extra.clone());
        assert_eq!(a.status, 400, "{extra}: {a:?}");
        assert!(a.body.to_string().contains(why), "{extra}: {a:?}");
    }
    let set = put_list(&fleet, &["*.org", "pypi.org"]);
    assert_eq!(set.status, 400, "{set:?}");
    let tenant = fleet.api.get(&format!("/v1/tenants/{}", fleet.tenant));
    assert_eq!(
        tenant.body["allowedDomains"],
        json!([]),
        "nothing stored: {tenant:?}"
    );
    let listed = fleet
        .api
        .get(&format!("/v1/containers?tenantId={}", fleet.tenant));
    assert_eq!(
        listed.body["containers"],
        json!([]),
        "nothing created: {listed:?}"
    );
    assert!(podman_lines(&["ps", "-aq", "--filter", "name=bad-list"]).is_empty());
}
