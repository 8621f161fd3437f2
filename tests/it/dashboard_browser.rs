//! The dashboard (`/ui`) end to end in real headless chromium: the real
//! orchestrator over TLS, the static agent on real Podman, and
//! `tests/browser/dashboard-e2e.js` driving Debian's chromium (its cases are
//! described there). This side starts the fleet, hands node a token, and
//! acts on node's signals: it runs the commands the "Add a worker" panel
//! shows, kills and restarts the agent and the orchestrator.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::browser::Browser;
use crate::fleet::*;
use crate::harness::{containers_conf, AgentKind};
use crate::term::member_token;

/// What the new worker is called: markup, which the page must show as text.
const MARKUP_NAME: &str = "<img src=x onerror=alert(1)>";

fn worker_name(f: &Fleet) -> String {
    let w = f.api.get("/v1/workers");
    assert_eq!(w.status, 200, "{w:?}");
    w.body["workers"]
        .as_array()
        .and_then(|ws| ws.iter().find(|w| w["id"] == f.worker.as_str()))
        .and_then(|w| w["name"].as_str())
        .expect("the fleet's worker is listed")
        .to_owned()
}

#[test]
fn a_member_launches_watches_types_stops_and_removes_and_is_offered_no_admin_action() {
    let f = Fleet::start("dash-member");
    let token = member_token(&f);
    let name = worker_name(&f);
    let image = test_image();
    let flag = |verb: &str| {
        let path = format!("/v1/workers/{}/{verb}", f.worker);
        let done = f.api.post(&path, serde_json::json!({}));
        assert_eq!(done.status, 200, "{done:?}");
    };
    Browser::start(
        "dashboard-e2e.js",
        "member",
        &f,
        &[
            ("CROPS_TOKEN", &token),
            ("CROPS_WORKER", &name),
            ("CROPS_IMAGE", &image),
        ],
    )
    .run(|signal| match signal {
        "CORDON" => {
            flag("cordon");
            Some("CORDONED")
        }
        "UNCORDON" => {
            flag("uncordon");
            Some("UNCORDONED")
        }
        _ => None,
    });
}

/// Run the panel's two commands as a person would on a new box: in an
/// empty directory with its own home, trusting the test CA the way the
/// panel's note says (`--cacert` and `--ca-file`, given here by their
/// environment variables), the worker named by `CROPS_WORKER_NAME`.
fn run_shown_commands(f: &Fleet, commands: &Value, home: &Path) -> Child {
    let download = commands["download"].as_str().expect("a download command");
    let enroll = commands["enroll"].as_str().expect("an enrol command");
    assert!(
        download.starts_with(&format!(
            "curl -fLo crops-agent {}/download/agent/x86_64",
            f.orch.url
        )),
        "{download}"
    );
    // `exec`, so the process this test stops is the agent itself.
    let run = enroll.replace("&& ./crops-agent run", "&& exec ./crops-agent run");
    assert_ne!(
        run, enroll,
        "the enrol command ends by running the agent: {enroll}"
    );
    std::fs::create_dir_all(home).unwrap();
    let shell = |line: &str| {
        let mut c = Command::new("bash");
        c.arg("-c")
            .arg(line)
            .current_dir(home)
            .env("HOME", home)
            .env("CURL_CA_BUNDLE", &f.orch.ca)
            .env("CROPS_CA_FILE", &f.orch.ca)
            .env("CROPS_WORKER_NAME", MARKUP_NAME)
            .env("CONTAINERS_CONF", containers_conf())
            .stdin(Stdio::null());
        c
    };
    let got = shell(download).output().expect("bash");
    assert!(got.status.success(), "{download}: {got:?}");
    let log = std::fs::File::create(home.join("agent.log")).unwrap();
    shell(&run)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("bash")
}

#[test]
fn an_admin_sees_every_view_and_adds_a_worker_with_the_shown_commands() {
    let f = Fleet::start_serving_agent("dash-admin");
    // Room for a second worker (the free plan has one).
    f.set_plan("pro");
    let home = f.dir.path("new-box");
    let mut agent: Option<Child> = None;
    let token = f.orch.admin_token.clone();
    Browser::start("dashboard-e2e.js", "admin", &f, &[("CROPS_TOKEN", &token)]).run(|line| {
        let json = line.strip_prefix("COMMANDS ")?;
        let commands: Value = serde_json::from_str(json).expect("the commands as JSON");
        agent = Some(run_shown_commands(&f, &commands, &home));
        Some("STARTED")
    });
    let mut agent = agent.expect("the commands were run");
    let _ = agent.kill();
    let _ = agent.wait();
}

#[test]
fn the_page_follows_a_worker_going_offline_and_an_orchestrator_restart() {
    let mut f = Fleet::start("dash-live");
    let token = member_token(&f);
    let name = worker_name(&f);
    Browser::start(
        "dashboard-e2e.js",
        "live",
        &f,
        &[("CROPS_TOKEN", &token), ("CROPS_WORKER", &name)],
    )
    .run(|signal| match signal {
        "KILL_AGENT" => {
            f.kill_agent();
            Some("KILLED")
        }
        "READY_TO_KILL" => {
            f.orch.kill9();
            Some("KILLED")
        }
        "START" => {
            f.orch.spawn();
            f.start_agent();
            Some("STARTED")
        }
        _ => None,
    });
}

#[test]
fn a_worker_card_says_its_agent_runs_as_root() {
    card_shows_podman(AgentKind::Root, "as root");
}

#[test]
fn a_worker_card_says_rootless_and_what_that_cannot_do_here() {
    card_shows_podman(AgentKind::Rootless, "rootless");
}

/// The `podman` case: the card of an agent of `kind` says `podman`, and
/// the first limitation the workers API lists (on cgroup v1, rootless:
/// the limits ignored), or "none".
fn card_shows_podman(kind: AgentKind, podman: &str) {
    let f = Fleet::start_as("dash-podman", kind);
    let token = member_token(&f);
    let name = worker_name(&f);
    let listed = f.api.get("/v1/workers");
    let worker = listed.body["workers"]
        .as_array()
        .and_then(|ws| ws.iter().find(|w| w["id"] == f.worker.as_str()))
        .cloned()
        .expect("the fleet's worker is listed");
    let limitation = worker["limitations"][0].as_str().unwrap_or("none");
    match kind {
        AgentKind::Root => assert_eq!(limitation, "none", "{worker}"),
        AgentKind::Rootless if crate::lifecycle::cgroup_v1() => {
            assert!(limitation.contains("limits are ignored"), "{worker}")
        }
        AgentKind::Rootless => {}
    }
    Browser::start(
        "dashboard-e2e.js",
        "podman",
        &f,
        &[
            ("CROPS_TOKEN", &token),
            ("CROPS_WORKER", &name),
            ("CROPS_PODMAN", podman),
            ("CROPS_LIMITATION", limitation),
        ],
    )
    .run(|_| None);
}
