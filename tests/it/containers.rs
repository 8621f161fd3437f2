//! Containers end to end: the API, the orchestrator's hub, the static agent
//! and real Podman, and nothing lost or duplicated across reconnects.

use std::sync::mpsc;
use std::time::Duration;

use serde_json::json;

use crate::fleet::*;
use crate::harness::*;
use crate::http::Https;

fn unique(name: &str) -> String {
    format!("e2e-{name}-{}", std::process::id())
}

#[test]
fn a_container_lives_its_whole_life_through_the_api() {
    whole_life(AgentKind::Root);
}

#[test]
fn a_container_lives_its_whole_life_on_rootless_podman() {
    whole_life(AgentKind::Rootless);
}

fn whole_life(kind: AgentKind) {
    let f = Fleet::start_as("life", kind);
    let created = f.create(
        &unique(&format!("life-{kind:?}")),
        json!({"env": {"GREETING": "hi there"}}),
    );
    assert_eq!(created.status, 201, "{created:?}");
    let id = created.body["id"].as_str().unwrap().to_string();
    assert_eq!(created.body["state"], "created");

    // Podman holds exactly one container, labelled as ours.
    let engine = f.podman_ids(&id);
    assert_eq!(engine.len(), 1, "one podman container for {id}");
    let inspect = f.inspect(&engine[0]);
    let labels = &inspect["Config"]["Labels"];
    assert_eq!(labels["crops.managed"], "true");
    assert_eq!(labels["crops.tenant"], f.tenant.as_str());

    let started = f.api.post(&format!("/v1/containers/{id}/start"), json!({}));
    assert_eq!(
        (started.status, &started.body["state"]),
        (200, &json!("running")),
        "{started:?}"
    );
    assert_eq!(f.inspect(&engine[0])["State"]["Running"], true);

    let hello = f.exec(&id, &["sh", "-c", "echo $GREETING"]);
    assert_eq!(hello.status, 200, "{hello:?}");
    assert_eq!(hello.body["exitCode"], 0);
    assert_eq!(hello.body["stdout"], "hi there\n");

    // Shell metacharacters are inert argv, never interpreted on the worker.
    let nasty = "$(id); rm -rf / `reboot` | && > /x";
    let echoed = f.exec(&id, &["echo", nasty]);
    assert_eq!(echoed.body["stdout"], format!("{nasty}\n"), "{echoed:?}");

    if kind == AgentKind::Rootless && crate::lifecycle::cgroup_v1() {
        // Rootless Podman cannot measure containers on cgroup v1: the call
        // says so (and the worker lists it, see lifecycle.rs).
        let stats = f.api.get(&format!("/v1/containers/{id}/stats"));
        assert!(stats.status >= 400, "{stats:?}");
        assert!(
            stats.body.to_string().contains("rootless"),
            "the reason is named: {stats:?}"
        );
    } else {
        usage_is_sampled(&f, &id);
    }

    let listed = f.api.get(&format!("/v1/containers?tenantId={}", f.tenant));
    let row = listed.body["containers"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["id"] == id.as_str()).cloned())
        .unwrap_or_else(|| panic!("{id} not listed: {listed:?}"));
    assert_eq!(row["state"], "running");
    assert_eq!(row["workerId"], f.worker.as_str());

    let stopped = f.api.post(
        &format!("/v1/containers/{id}/stop"),
        json!({"timeoutSecs": 1}),
    );
    assert_eq!(
        (stopped.status, &stopped.body["state"]),
        (200, &json!("exited")),
        "{stopped:?}"
    );
    assert_eq!(f.inspect(&engine[0])["State"]["Running"], false);

    let removed = f.api.delete(&format!("/v1/containers/{id}?force=true"));
    assert_eq!(
        (removed.status, &removed.body["state"]),
        (200, &json!("removed")),
        "{removed:?}"
    );
    assert!(f.podman_ids(&id).is_empty(), "podman still holds {id}");
    assert_eq!(
        f.api.get(&format!("/v1/containers/{id}")).body["state"],
        "removed"
    );
}

/// The container's stats answer with its memory now and the agent's
/// samples of the last minutes, one per heartbeat.
fn usage_is_sampled(f: &Fleet, id: &str) {
    let stats = f.api.get(&format!("/v1/containers/{id}/stats"));
    assert_eq!(stats.status, 200, "{stats:?}");
    let mem = stats.body["stats"][0]["memoryUsed"]
        .as_u64()
        .or(stats.body["memoryUsed"].as_u64());
    assert!(mem.is_some_and(|m| m > 0), "{stats:?}");
    // The agent's samples of the last minutes come along: one per heartbeat.
    let history = wait_until(
        "two samples in the stats' history",
        Duration::from_secs(30),
        || {
            let s = f.api.get(&format!("/v1/containers/{id}/stats"));
            let h = s.body["history"].as_array().cloned().unwrap_or_default();
            (h.len() >= 2).then_some(h)
        },
    );
    assert!(
        history
            .windows(2)
            .all(|w| w[0]["at"].as_u64() < w[1]["at"].as_u64()),
        "{history:?}"
    );
    assert!(
        history
            .iter()
            .all(|s| s["memoryUsed"].as_u64().is_some_and(|m| m > 0)),
        "{history:?}"
    );
}

#[test]
fn exec_output_is_capped_and_missing_binaries_are_clear() {
    let f = Fleet::start("exec");
    let id = f.running(&unique("exec"), json!({}));

    let big = f.exec(&id, &["sh", "-c", "yes 0123456789 | head -c 2000000"]);
    assert_eq!(big.status, 200, "big output still answered");
    assert_eq!(big.body["stdoutTruncated"], true);
    assert_eq!(big.body["stdout"].as_str().unwrap().len(), 256 * 1024);
    assert_eq!(big.body["exitCode"], 0);

    let missing = f.exec(&id, &["no-such-binary", "--flag"]);
    let text = missing.body.to_string();
    assert!(
        text.contains("no-such-binary"),
        "the error names the binary: {missing:?}"
    );
    if missing.status == 200 {
        assert_ne!(missing.body["exitCode"], 0, "{missing:?}");
    }

    let failing = f.exec(&id, &["sh", "-c", "echo oops >&2; exit 3"]);
    assert_eq!(failing.body["exitCode"], 3);
    assert_eq!(failing.body["stderr"], "oops\n");

    // The agent keeps serving after all of it.
    assert_eq!(f.exec(&id, &["true"]).body["exitCode"], 0);
}

#[test]
fn background_commands_can_be_watched_and_killed() {
    background(AgentKind::Root);
}

#[test]
fn background_commands_can_be_watched_and_killed_on_rootless_podman() {
    background(AgentKind::Rootless);
}

fn background(kind: AgentKind) {
    let f = Fleet::start_as("bg", kind);
    let id = f.running(&unique(&format!("bg-{kind:?}")), json!({}));
    let started = f.api.post(
        &format!("/v1/containers/{id}/background"),
        json!({"command": ["sh", "-c", "echo one; echo two; exec sleep 600"]}),
    );
    assert_eq!(started.status, 200, "{started:?}");
    let handle = started.body["handle"].as_str().unwrap().to_string();
    let capture = |offset: u64| {
        f.api.get(&format!(
            "/v1/containers/{id}/background/{handle}?offset={offset}"
        ))
    };
    let seen = wait_until("both lines captured", Duration::from_secs(30), || {
        let c = capture(0);
        (c.body["output"] == "one\ntwo\n").then_some(c)
    });
    assert_eq!(seen.body["running"], true);
    let next = seen.body["nextOffset"].as_u64().unwrap();
    assert_eq!(next, 8);
    assert_eq!(
        capture(next).body["output"],
        "",
        "nothing new past the offset"
    );
    assert_eq!(
        capture(4).body["output"],
        "two\n",
        "output since a byte offset"
    );

    let killed = f.api.post(
        &format!("/v1/containers/{id}/background/{handle}/kill"),
        json!({}),
    );
    assert_eq!(
        (killed.status, &killed.body["killed"]),
        (200, &json!(true)),
        "{killed:?}"
    );
    wait_until("the command to end", Duration::from_secs(30), || {
        (capture(next).body["running"] == false).then_some(())
    });
}

#[test]
fn the_same_create_delivered_three_times_makes_one_container() {
    let f = Fleet::start("idem");
    let id = "e2e-idem-0001";
    let name = unique("idem");
    let answers: Vec<u16> = (0..3)
        .map(|_| f.create(&name, json!({"id": id})).status)
        .collect();
    assert_eq!(answers, vec![201, 200, 200]);
    assert_eq!(f.podman_ids(id).len(), 1, "exactly one container");
}

#[test]
fn bad_requests_are_refused_clearly_and_nothing_starts() {
    let f = Fleet::start("bad");
    let privileged = f.create("--privileged", json!({}));
    assert_eq!(privileged.status, 400, "{privileged:?}");
    assert!(privileged.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("name"));

    let bad_image = f.create(&unique("img"), json!({"image": "Not An Image;reboot"}));
    assert_eq!(bad_image.status, 400, "{bad_image:?}");

    let missing = f.create(
        &unique("missing"),
        json!({"image": "localhost/crops-test/nope:1"}),
    );
    assert!(missing.status >= 400, "{missing:?}");
    assert!(
        missing.body.to_string().contains("nope"),
        "the error names the image: {missing:?}"
    );

    let ghost = f.api.post(
        "/v1/containers/0000aaaa-0000-4000-8000-000000000000/start",
        json!({}),
    );
    assert_eq!(ghost.status, 404, "{ghost:?}");

    let none = podman_lines(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=crops.tenant={}", f.tenant),
    ]);
    let failed_records = f.api.get(&format!("/v1/containers?tenantId={}", f.tenant));
    assert!(
        none.is_empty(),
        "nothing was created in Podman: {none:?} {failed_records:?}"
    );

    // Still serving.
    let ok = f.create(&unique("ok"), json!({}));
    assert_eq!(ok.status, 201, "{ok:?}");
}

#[test]
fn containers_keep_running_while_the_orchestrator_is_away() {
    let mut f = Fleet::start("away");
    let id = f.running(&unique("away"), json!({}));
    let engine = f.podman_ids(&id).remove(0);
    let before = f.orch.worker(&f.worker).unwrap()["connectedAt"]
        .as_u64()
        .unwrap();
    // A call in flight when the orchestrator dies: its audit intent (durable
    // while the worker runs it) comes back as an `interrupted` entry.
    let api = Https::new(&f._tls.ca, f.orch.port, &f.orch.admin_token);
    let path = format!("/v1/containers/{id}/exec");
    std::thread::spawn(move || {
        let argv = json!({"command": ["sh", "-c", "echo started > /tmp/started; exec sleep 300"]});
        // Cut off by the kill below: no answer to keep.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| api.post(&path, argv)));
    });
    wait_until("the exec running", Duration::from_secs(30), || {
        (f.exec(&id, &["cat", "/tmp/started"]).body["stdout"] == "started\n").then_some(())
    });
    // Reading the log commits what is queued: the answered calls' entries
    // are on disk before the kill; only the one in flight has an intent.
    f.api.get(&format!("/v1/audit?tenantId={}", f.tenant));

    f.orch.kill9();
    assert_eq!(
        podman_inspect(&engine)["State"]["Running"],
        true,
        "still running without the orchestrator"
    );
    f.orch.spawn();
    f.orch.wait_worker(&f.worker, "the agent back", |w| {
        w["connectedAt"].as_u64() > Some(before)
    });
    let c = f.api.get(&format!("/v1/containers/{id}"));
    assert_eq!(c.body["state"], "running", "{c:?}");
    assert_eq!(
        f.podman_ids(&id),
        vec![engine.clone()],
        "the same container, not a new one"
    );
    let log = f.api.get(&format!("/v1/audit?tenantId={}", f.tenant));
    let entries = log.body["entries"].as_array().expect("entries").clone();
    let exec = "POST /v1/containers/{containerId}/exec";
    let outcomes: Vec<&str> = entries
        .iter()
        .filter(|e| e["kind"] == "api" && e["action"] == exec)
        .map(|e| e["outcome"].as_str().unwrap_or_default())
        .collect();
    assert!(
        outcomes.contains(&"interrupted") && outcomes.contains(&"ok"),
        "the cut-off exec is logged as interrupted, the others ok: {outcomes:?}"
    );
    assert!(
        entries.iter().all(|e| e["outcome"] != "pending"),
        "an intent never shows as an entry: {entries:?}"
    );

    // A restarted agent finds its own containers too.
    f.kill_agent();
    assert_eq!(
        podman_inspect(&engine)["State"]["Running"],
        true,
        "still running without the agent"
    );
    f.start_agent();
    let listed = f.api.get(&format!("/v1/workers/{}/containers", f.worker));
    // list-all covers every tenant on the worker; this test's are ours.
    let ids: Vec<_> = listed.body["containers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["tenantId"] == f.tenant.as_str())
        .map(|c| c["containerId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, vec![id.clone()], "{listed:?}");
    assert_eq!(
        f.api.get(&format!("/v1/containers/{id}")).body["state"],
        "running"
    );
}

#[test]
fn a_vanished_container_is_marked_lost_not_recreated() {
    let mut f = Fleet::start("lost");
    let id = f.running(&unique("lost"), json!({}));
    f.kill_agent();
    let engine = f.podman_ids(&id).remove(0);
    podman_lines(&["rm", "-f", "-t", "0", &engine]);
    f.start_agent();
    wait_until("the record marked lost", Duration::from_secs(30), || {
        (f.api.get(&format!("/v1/containers/{id}")).body["state"] == "lost").then_some(())
    });
    assert!(f.podman_ids(&id).is_empty(), "nothing recreated");
}

#[test]
fn a_worker_that_is_offline_answers_at_once() {
    let mut f = Fleet::start("offline");
    let mut agent = f.agent.take().unwrap();
    agent.signal(nix::sys::signal::Signal::SIGTERM);
    agent.wait_exit(Duration::from_secs(10));
    wait_until("the worker offline", Duration::from_secs(10), || {
        f.orch
            .worker(&f.worker)
            .filter(|w| w["status"] == "offline")
    });
    let a = f.create(&unique("off"), json!({}));
    assert_eq!((a.status, a.code()), (503, "worker_offline"), "{a:?}");
}

#[test]
fn a_slow_exec_never_blocks_a_stop() {
    let f = Fleet::start("slow");
    let busy = f.running(&unique("slow-busy"), json!({}));
    let other = f.running(&unique("slow-other"), json!({}));
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|s| {
        let f = &f;
        let busy1 = busy.clone();
        s.spawn(move || {
            let a = f.exec(
                &busy1,
                &["sh", "-c", "echo started > /tmp/started; exec sleep 300"],
            );
            tx.send(a).unwrap();
        });
        wait_until("the slow exec running", Duration::from_secs(30), || {
            (f.exec(&busy, &["cat", "/tmp/started"]).body["stdout"] == "started\n").then_some(())
        });
        let stop = f.api.post(
            &format!("/v1/containers/{other}/stop"),
            json!({"timeoutSecs": 1}),
        );
        assert_eq!(stop.status, 200, "{stop:?}");
        assert!(
            matches!(rx.try_recv(), Err(mpsc::TryRecvError::Empty)),
            "the stop answered while the exec was still in flight"
        );
        // Stopping the busy container ends its exec, which then answers.
        let stop = f.api.post(
            &format!("/v1/containers/{busy}/stop"),
            json!({"timeoutSecs": 1}),
        );
        assert_eq!(stop.status, 200, "{stop:?}");
        let exec = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the exec answers");
        assert!(exec.status == 200 || exec.status >= 500, "{exec:?}");
    });
}

#[test]
fn errors_leave_a_kept_alive_connection_usable() {
    let f = Fleet::start("keepalive");
    let mut conn = f.api.conn();
    let bad = conn.request(
        "POST",
        "/v1/containers",
        Some(json!({"name": "--privileged"})),
    );
    assert_eq!(bad.status, 400, "{bad:?}");
    let ghost = conn.request(
        "GET",
        "/v1/containers/0000aaaa-0000-4000-8000-000000000000",
        None,
    );
    assert_eq!(ghost.status, 404, "{ghost:?}");
    let list = conn.request(
        "GET",
        &format!("/v1/containers?tenantId={}", f.tenant),
        None,
    );
    assert_eq!(list.status, 200, "{list:?}");
    assert_eq!(list.body["containers"], json!([]));
}
