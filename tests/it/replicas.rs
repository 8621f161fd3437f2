//! Three orchestrators on one PostgreSQL behind HAProxy, with real agents
//! on real Podman connected through the balancer: container calls work
//! whichever replica they land on (most are relayed to the replica holding
//! the agent), and a replica killed with SIGKILL while calls run loses
//! nothing acknowledged: its agents reconnect through the balancer to the
//! others, their containers are left alone, and their workers never show
//! offline.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::fleet::{podman_inspect, podman_lines, test_image, TenantCleanup};
use crate::harness::*;
use crate::http::{Answer, Https};
use crops_e2e::replicas::Replicas;

/// An acknowledged mutating call: its audit action and container id.
type Acked = (String, String);

fn create(api: &Https, tenant: &str, worker: &str, name: &str) -> std::io::Result<Answer> {
    let body = json!({
        "tenantId": tenant, "workerId": worker, "name": name,
        "image": test_image(), "command": ["sleep", "3600"],
    });
    api.try_request("POST", "/v1/containers", Some(body))
}

/// Create, start and exec on `worker`, each call asserted; the id.
fn run_one(api: &Https, tenant: &str, worker: &str, name: &str, acked: &mut Vec<Acked>) -> String {
    let c = create(api, tenant, worker, name).unwrap();
    assert_eq!(c.status, 201, "{c:?}");
    let id = c.body["id"].as_str().unwrap().to_string();
    acked.push(("POST /v1/containers".into(), id.clone()));
    let s = api.post(&format!("/v1/containers/{id}/start"), json!({}));
    assert_eq!(s.status, 200, "{s:?}");
    acked.push(("POST /v1/containers/{containerId}/start".into(), id.clone()));
    let e = api.post(
        &format!("/v1/containers/{id}/exec"),
        json!({ "command": ["echo", name] }),
    );
    assert_eq!(e.status, 200, "{e:?}");
    assert_eq!(e.body["stdout"], format!("{name}\n"), "{e:?}");
    acked.push(("POST /v1/containers/{containerId}/exec".into(), id.clone()));
    id
}

/// Podman's own id and start time of the container Crops calls `id`.
fn engine_state(id: &str) -> (String, Value) {
    let label = format!("label=crops.container-id={id}");
    let ids = podman_lines(&["ps", "-aq", "--filter", &label]);
    assert_eq!(
        ids.len(),
        1,
        "container {id} on Podman exactly once: {ids:?}"
    );
    let v = podman_inspect(&ids[0]);
    (
        v["Id"].as_str().unwrap().to_string(),
        v["State"]["StartedAt"].clone(),
    )
}

#[test]
fn calls_and_agents_survive_a_replica_killed_behind_the_balancer() {
    require_podman();
    let mut r = Replicas::start("replicas");
    // One tenant on a plan without limits (the free plan allows one
    // worker and three containers).
    let tenant = r.front.create_tenant("replicas");
    let _cleanup = TenantCleanup(tenant.clone());
    let unlimited =
        json!({"name": "custom", "workers": null, "concurrentContainers": null, "historyDays": 1});
    let p = r.api.request(
        "PUT",
        &format!("/v1/tenants/{tenant}/plan"),
        Some(unlimited),
    );
    assert_eq!(p.status, 200, "{p:?}");

    // Three agents enrolled and connected through the balancer, one after
    // the other: least connections puts each on a replica of its own.
    let cmd = AgentCmd::native();
    let mut agents = Vec::new();
    let mut workers = Vec::new();
    for i in 0..3 {
        let token = r.front.join_token(&tenant);
        let config = r.dir.path(&format!("agent{i}/worker.json"));
        let enrolled = cmd.enroll_ok(&r.front, &token, &config);
        let worker = enrolled["workerId"].as_str().unwrap().to_string();
        agents.push(cmd.run(&config, r.dir.path(&format!("agent{i}.log")), &[]));
        wait_until("the agent on a replica", Duration::from_secs(60), || {
            let total: u64 = (0..3).map(|j| r.connected_on(j)).sum();
            (total == i as u64 + 1).then_some(())
        });
        r.front.wait_worker(&worker, "the worker online", |w| {
            w["lastHeartbeatAt"].as_u64().is_some()
        });
        workers.push((tenant.clone(), worker));
    }
    let spread: Vec<u64> = (0..3).map(|j| r.connected_on(j)).collect();
    assert_eq!(spread, vec![1, 1, 1], "one agent per replica");

    // Container calls through the balancer: each lands on any replica and
    // is relayed to the one holding the worker's agent when that is another.
    let mut acked: Vec<Acked> = Vec::new();
    let mut kept = Vec::new();
    for (i, (tenant, w)) in workers.iter().enumerate() {
        kept.push(run_one(&r.api, tenant, w, &format!("kept-{i}"), &mut acked));
    }
    {
        let (tenant, w) = &workers[0];
        let gone = run_one(&r.api, tenant, w, "gone", &mut acked);
        let s = r
            .api
            .post(&format!("/v1/containers/{gone}/stop"), json!({}));
        assert_eq!(s.status, 200, "{s:?}");
        acked.push((
            "POST /v1/containers/{containerId}/stop".into(),
            gone.clone(),
        ));
        let d = r.api.delete(&format!("/v1/containers/{gone}"));
        assert!(d.status == 200 || d.status == 204, "{d:?}");
        acked.push(("DELETE /v1/containers/{containerId}".into(), gone.clone()));
        let label = format!("label=crops.container-id={gone}");
        assert!(podman_lines(&["ps", "-aq", "--filter", &label]).is_empty());
    }
    let before: BTreeMap<String, (String, Value)> = kept
        .iter()
        .map(|id| (id.clone(), engine_state(id)))
        .collect();

    // Calls keep running (creates and starts on every worker, round robin)
    // while the workers' status is watched, then a replica is killed.
    let stop = Arc::new(AtomicBool::new(false));
    let load_acked = Arc::new(Mutex::new(Vec::<Acked>::new()));
    let load = {
        let (stop, acked) = (stop.clone(), load_acked.clone());
        let api = Https::new(&r.tls.ca, r.front.port, &r.front.admin_token);
        let workers = workers.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let (tenant, w) = &workers[n % workers.len()];
                let name = format!("load-{n}");
                n += 1;
                let Ok(c) = create(&api, tenant, w, &name) else {
                    continue;
                };
                if c.status != 201 {
                    // Refused while its agent moves: not acknowledged.
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                let id = c.body["id"].as_str().unwrap().to_string();
                acked
                    .lock()
                    .unwrap()
                    .push(("POST /v1/containers".into(), id.clone()));
                let path = format!("/v1/containers/{id}/start");
                if let Ok(s) = api.try_request("POST", &path, Some(json!({}))) {
                    if s.status == 200 {
                        let a = "POST /v1/containers/{containerId}/start";
                        acked.lock().unwrap().push((a.into(), id));
                    }
                }
            }
        })
    };
    let seen = Arc::new(Mutex::new(BTreeMap::<String, String>::new()));
    let watch = {
        let (stop, seen) = (stop.clone(), seen.clone());
        let api = Https::new(&r.tls.ca, r.front.port, &r.front.admin_token);
        let workers = workers.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok(a) = api.try_request("GET", "/v1/workers", None) else {
                    continue;
                };
                let list = a.body["workers"].as_array().cloned().unwrap_or_default();
                for w in list
                    .iter()
                    .filter(|w| workers.iter().any(|(_, id)| w["id"] == *id))
                {
                    let status = w["status"].as_str().unwrap_or("?").to_string();
                    let id = w["id"].as_str().unwrap().to_string();
                    seen.lock().unwrap().entry(status).or_insert(id);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let load_count = || load_acked.lock().unwrap().len();
    wait_until("calls under way", Duration::from_secs(60), || {
        (load_count() >= 4).then_some(())
    });
    let victim = 0;
    r.replicas[victim].kill9();
    let at_kill = load_count();

    // Its agent reconnects through the balancer to another replica, and
    // calls to every worker succeed again.
    wait_until(
        "the agent moved to the others",
        Duration::from_secs(60),
        || (r.connected_on(1) + r.connected_on(2) == 3).then_some(()),
    );
    wait_until(
        "calls acknowledged after the kill",
        Duration::from_secs(120),
        || (load_count() >= at_kill + 2 * workers.len()).then_some(()),
    );
    stop.store(true, Ordering::Relaxed);
    load.join().expect("the call loop");
    watch.join().expect("the status watcher");
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.keys().all(|s| s == "online" || s == "reconnecting"),
        "workers only online or reconnecting through the failover: {seen:?}"
    );
    acked.extend(load_acked.lock().unwrap().iter().cloned());

    // Nothing acknowledged is lost, nothing running was touched.
    for (action, id) in &acked {
        if action == "POST /v1/containers"
            && !acked
                .iter()
                .any(|(a, i)| i == id && a.starts_with("DELETE"))
        {
            engine_state(id);
        }
    }
    for (id, was) in &before {
        assert_eq!(
            &engine_state(id),
            was,
            "container {id} neither stopped nor recreated"
        );
        assert_eq!(podman_inspect(&was.0)["State"]["Running"], true);
    }
    let mut entries = Vec::new();
    {
        let mut path = format!("/v1/audit?tenantId={tenant}&limit=1000");
        loop {
            let page = r.api.get(&path);
            assert_eq!(page.status, 200, "{page:?}");
            entries.extend(page.body["entries"].as_array().cloned().unwrap_or_default());
            match page.body["nextBefore"].as_u64() {
                Some(b) => path = format!("/v1/audit?tenantId={tenant}&limit=1000&before={b}"),
                None => break,
            }
        }
    }
    for (action, id) in &acked {
        assert!(
            entries.iter().any(|e| e["action"] == *action
                && e["outcome"] == "ok"
                && e["target"]
                    .as_str()
                    .is_some_and(|t| t.contains(id.as_str()))),
            "no audit entry for {action} {id}: {entries:#?}"
        );
    }
    drop(agents);
}
