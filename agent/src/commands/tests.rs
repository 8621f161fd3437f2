//! Unit tests of the command layer against the recording runner: the argv
//! each command would run, validation before any process, error codes, and
//! exactly one reply per command. Real-Podman tests live in `tests/it/`.

use std::collections::BTreeMap;
use std::sync::Arc;

use protocol::container::*;
use protocol::exec::{Exec, ExecResult};
use protocol::{Body, Envelope, ErrorCode};

use super::Executor;
use crate::podman::{Call, Lane, Podman, RecordingRunner, RunOutput};

fn executor(
    answers: Vec<RunOutput>,
    floor: Profile,
) -> (Executor, Arc<RecordingRunner>, std::path::PathBuf) {
    let runner = Arc::new(RecordingRunner::new(answers));
    let dir = std::env::temp_dir().join(format!(
        "crops-cmd-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let ex = Executor::new(Podman::with_runner("podman", runner.clone()), &dir, floor);
    (ex, runner, dir)
}

fn create_req(name: &str, profile: Profile) -> ContainerCreate {
    ContainerCreate {
        container_id: "c-1".into(),
        tenant_id: "t-1".into(),
        name: name.into(),
        image: "localhost/crops-test/busybox:latest".into(),
        env: BTreeMap::from([
            ("API_KEY".into(), "s3cret value".into()),
            ("PATH".into(), "/opt/bin:/bin".into()),
        ]),
        labels: BTreeMap::from([("team".into(), "blue".into())]),
        command: Some(vec![
            "sh".into(),
            "-c".into(),
            "echo $(id); rm -rf /".into(),
        ]),
        workspace: true,
        profile,
        allowed_domains: Vec::new(),
    }
}

fn error_of(body: &Body) -> (ErrorCode, String) {
    match body {
        Body::Error(e) => (e.code, e.message.clone()),
        other => panic!("expected an error, got {other:?}"),
    }
}

const EXISTING: &str = r#"[{"Id": "e1", "Names": ["box"], "Image": "img", "State": "running",
  "Labels": {"crops.managed": "true", "crops.tenant": "t-1", "crops.container-id": "c-1",
             "crops.profile": "standard"}}]"#;

#[test]
fn create_builds_a_labelled_argv_without_env_values() {
    smol::block_on(async {
        let (ex, runner, dir) = executor(
            vec![RecordingRunner::ok("[]"), RecordingRunner::ok("0123abcd\n")],
            Profile::Open,
        );
        let reply = ex
            .call(Body::ContainerCreate(create_req("box", Profile::Strict)))
            .await;
        let Body::ContainerCreated(done) = reply else {
            panic!("{reply:?}")
        };
        assert!(done.created);
        assert_eq!(done.container.engine_id, "0123abcd");
        assert_eq!(done.container.profile, Some(Profile::Strict));
        let calls = runner.full_calls();
        assert_eq!(calls.len(), 2);
        assert_eq!(
            calls[0].args.join(" "),
            "ps --all --format json --filter label=crops.managed=true",
            "the first create indexes the managed containers once"
        );
        let create = &calls[1];
        let argv = create.args.join(" ");
        let ws = dir.join("workspaces").join("c-1");
        assert!(
            argv.starts_with(
                "create --pull never --name box --label crops.managed=true \
             --label crops.tenant=t-1 --label crops.container-id=c-1 --label crops.profile=strict \
             --label team=blue --env-file "
            ),
            "{argv}"
        );
        assert!(
            argv.contains(&format!("--volume {}:/workspace:Z", ws.display())),
            "{argv}"
        );
        assert!(
            argv.ends_with(
                "--network none --cap-drop ALL --security-opt no-new-privileges --read-only \
             --tmpfs /tmp --memory 2g --cpus 1 --pids-limit 128 \
             -- localhost/crops-test/busybox:latest sh -c echo $(id); rm -rf /"
            ),
            "{argv}"
        );
        assert_eq!(
            create.args.last().map(String::as_str),
            Some("echo $(id); rm -rf /"),
            "one inert argv element"
        );
        assert!(
            !argv.contains("s3cret") && !argv.contains("/opt/bin"),
            "env values never in argv: {argv}"
        );
        assert!(
            create.env.is_empty(),
            "no tenant variable in the podman process's environment: {:?}",
            create.env
        );
        assert_eq!(
            runner.env_files(),
            ["API_KEY=s3cret value\nPATH=/opt/bin:/bin\n"],
            "the values travel in the env file"
        );
        assert!(ws.is_dir(), "the workspace exists");
        let _ = std::fs::remove_dir_all(dir);
    });
}

#[test]
fn a_retried_create_returns_the_existing_container() {
    smol::block_on(async {
        // The index finds the id, and a lookup by label confirms it.
        let (ex, runner, dir) = executor(
            vec![RecordingRunner::ok(EXISTING), RecordingRunner::ok(EXISTING)],
            Profile::Open,
        );
        let reply = ex
            .call(Body::ContainerCreate(create_req("box", Profile::Standard)))
            .await;
        let Body::ContainerCreated(done) = reply else {
            panic!("{reply:?}")
        };
        assert!(!done.created);
        assert_eq!(done.container.engine_id, "e1");
        let calls = runner.calls();
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert!(calls.iter().all(|c| c[0] == "ps"), "no create: {calls:?}");
        assert!(!dir.exists());
    });
}

#[test]
fn bad_input_is_refused_before_any_process() {
    smol::block_on(async {
        let (ex, runner, _) = executor(vec![], Profile::Standard);
        let (code, msg) = error_of(
            &ex.call(Body::ContainerCreate(create_req(
                "--privileged",
                Profile::Standard,
            )))
            .await,
        );
        assert_eq!(code, ErrorCode::InvalidArgument);
        assert!(msg.contains("invalid name"), "{msg}");
        let mut req = create_req("ok", Profile::Standard);
        req.image = "busybox;reboot".into();
        let (code, msg) = error_of(&ex.call(Body::ContainerCreate(req)).await);
        assert_eq!(code, ErrorCode::InvalidArgument);
        assert!(msg.contains("image"), "{msg}");
        let mut req = create_req("ok", Profile::Standard);
        req.env.insert("CROPS_EXEC_MARK".into(), "x".into());
        assert_eq!(
            error_of(&ex.call(Body::ContainerCreate(req)).await).0,
            ErrorCode::InvalidArgument
        );
        let (code, msg) = error_of(
            &ex.call(Body::ContainerCreate(create_req("ok", Profile::Open)))
                .await,
        );
        assert_eq!(code, ErrorCode::Forbidden);
        assert!(
            msg.contains("weaker than this worker's security floor (standard)"),
            "{msg}"
        );
        let stop = ContainerStop {
            container_id: "../x".into(),
            timeout_secs: None,
        };
        assert_eq!(
            error_of(&ex.call(Body::ContainerStop(stop)).await).0,
            ErrorCode::InvalidArgument
        );
        assert!(runner.calls().is_empty(), "{:?}", runner.calls());
    });
}

#[test]
fn unknown_containers_and_images_are_not_found() {
    smol::block_on(async {
        let (ex, _, dir) = executor(
            vec![
                RecordingRunner::ok("[]"),
                RecordingRunner::ok("[]"),
                RecordingRunner::fail(125, "Error: localhost/nope:latest: image not known"),
            ],
            Profile::Open,
        );
        let start = Body::ContainerStart(ContainerRef {
            container_id: "ghost".into(),
        });
        assert_eq!(error_of(&ex.call(start).await).0, ErrorCode::NotFound);
        let mut req = create_req("box", Profile::Standard);
        req.image = "localhost/nope:latest".into();
        let (code, msg) = error_of(&ex.call(Body::ContainerCreate(req)).await);
        assert_eq!(code, ErrorCode::NotFound);
        assert!(msg.contains("image not known"), "{msg}");
        assert!(
            !dir.join("workspaces/c-1").exists(),
            "a failed create leaves no workspace"
        );
        let _ = std::fs::remove_dir_all(dir);
    });
}

#[test]
fn exec_passes_argv_env_in_a_file_and_workdir() {
    smol::block_on(async {
        let (ex, runner, _) = executor(
            vec![
                RecordingRunner::ok(EXISTING),
                RecordingRunner::ok("$(id); rm -rf /\n"),
            ],
            Profile::Open,
        );
        let req = Exec {
            container_id: "c-1".into(),
            command: vec!["echo".into(), "$(id); rm -rf /".into()],
            env: BTreeMap::from([("FOO".into(), "a;b".into())]),
            workdir: Some("/workspace".into()),
            timeout_secs: Some(5),
        };
        let reply = ex.call(Body::Exec(req)).await;
        assert_eq!(
            reply,
            Body::ExecDone(ExecResult {
                exit_code: Some(0),
                stdout: "$(id); rm -rf /\n".into(),
                stderr: String::new(),
                stdout_truncated: false,
                stderr_truncated: false,
                timed_out: false,
            })
        );
        let call: Call = runner.full_calls().remove(1);
        assert_eq!(
            call.args,
            [
                "exec",
                "--env-file",
                call.args[2].as_str(),
                "--env",
                "CROPS_EXEC_MARK",
                "--workdir",
                "/workspace",
                "--",
                "e1",
                "echo",
                "$(id); rm -rf /"
            ]
        );
        assert_eq!(
            call.env.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["CROPS_EXEC_MARK"],
            "only the agent's own mark in the podman process's environment"
        );
        assert_eq!(runner.env_files(), ["FOO=a;b\n"]);
        assert_eq!(call.cap, protocol::exec::EXEC_OUTPUT_CAP);
        assert_eq!(call.timeout, std::time::Duration::from_secs(5));
        assert_eq!(call.lane, Lane::Work);
    });
}

#[test]
fn exec_reports_podman_errors_but_passes_command_exit_codes() {
    smol::block_on(async {
        let (ex, _, _) = executor(
            vec![
                RecordingRunner::ok(EXISTING),
                RecordingRunner::fail(127, "Error: runc: exec failed: executable file not found in $PATH"),
                RecordingRunner::fail(255, "Error: can only create exec sessions on running containers: container state improper"),
                RecordingRunner::fail(125, "Error: no container with name or ID \"e1\" found: no such container"),
            ],
            Profile::Open,
        );
        let exec = |cmd: &str| {
            Body::Exec(Exec {
                container_id: "c-1".into(),
                command: vec![cmd.into()],
                env: BTreeMap::new(),
                workdir: None,
                timeout_secs: None,
            })
        };
        let Body::ExecDone(r) = ex.call(exec("nosuch")).await else {
            panic!()
        };
        assert_eq!(r.exit_code, Some(127));
        assert!(r.stderr.contains("executable file not found"));
        assert_eq!(
            error_of(&ex.call(exec("true")).await).0,
            ErrorCode::Conflict
        );
        assert_eq!(
            error_of(&ex.call(exec("true")).await).0,
            ErrorCode::NotFound
        );
    });
}

#[test]
fn lifecycle_verbs_use_their_lane_and_the_cached_engine_id() {
    smol::block_on(async {
        let (ex, runner, _) = executor(vec![RecordingRunner::ok(EXISTING)], Profile::Open);
        let id = || "c-1".to_owned();
        let r = ex
            .call(Body::ContainerStop(ContainerStop {
                container_id: id(),
                timeout_secs: Some(3),
            }))
            .await;
        assert_eq!(
            r,
            Body::ContainerStopped(ContainerStatus {
                container_id: id(),
                state: ContainerState::Exited
            })
        );
        ex.call(Body::ContainerStart(ContainerRef { container_id: id() }))
            .await;
        ex.call(Body::ContainerRemove(ContainerRemove {
            container_id: id(),
            force: true,
        }))
        .await;
        let calls = runner.full_calls();
        let argv: Vec<String> = calls.iter().map(|c| c.args.join(" ")).collect();
        assert_eq!(
            &argv[1..],
            ["stop -t 3 -- e1", "start -- e1", "rm --force -t 0 -- e1"]
        );
        assert!(calls[1..].iter().all(|c| c.lane == Lane::Lifecycle));
    });
}

#[test]
fn stats_reads_raw_numbers() {
    smol::block_on(async {
        let stats =
            r#"{"ContainerID":"e1","CPU":12.5,"MemUsage":1000,"MemLimit":2147483648,"PIDs":3}"#;
        let sizes = r#"[{"Id":"e1","Size":{"rootFsSize":5,"rwSize":77}}]"#;
        let (ex, runner, _) = executor(
            vec![
                RecordingRunner::ok(EXISTING),
                RecordingRunner::ok(stats),
                RecordingRunner::ok(sizes),
            ],
            Profile::Open,
        );
        // What the heartbeats sampled comes with the answer.
        let earlier = UsageSample {
            at: 1_000,
            cpu_percent: 3.0,
            memory_used: 900,
        };
        ex.usage().record([("c-1".to_owned(), earlier)]);
        let r = ex
            .call(Body::ContainerStats(ContainerStatsRequest {
                container_id: None,
            }))
            .await;
        assert_eq!(
            r,
            Body::ContainerStatsResult(ContainerStatsList {
                stats: vec![ContainerStats {
                    container_id: "c-1".into(),
                    cpu_percent: 12.5,
                    memory_used: 1000,
                    memory_limit: Some(2_147_483_648),
                    disk_used: Some(77),
                    pids: 3,
                    history: vec![earlier],
                }]
            })
        );
        assert_eq!(
            runner.calls()[1].join(" "),
            "stats --no-stream --no-reset --format {{json .ContainerStats}} -- e1"
        );
    });
}

#[test]
fn every_command_gets_one_reply_with_its_request_id() {
    smol::block_on(async {
        let (ex, _, _) = executor(vec![RecordingRunner::ok("[]")], Profile::Open);
        let (tx, rx) = smol::channel::unbounded();
        let body = Body::TerminalClose(protocol::terminal::TerminalClose { session_id: 1 });
        let reply = ex.handle("r-9".into(), body, &tx).await;
        assert_eq!(reply.request_id.as_deref(), Some("r-9"));
        assert_eq!(
            error_of(&reply.body).0,
            ErrorCode::NotFound,
            "no such session"
        );
        assert!(rx.try_recv().is_err(), "no stray events");
        let list = ex
            .handle("r-10".into(), Body::ContainerListAll(Empty {}), &tx)
            .await;
        assert_eq!(
            list,
            Envelope::request(
                "r-10",
                Body::ContainerListedAll(ContainerListing { containers: vec![] })
            )
        );
    });
}

#[test]
fn an_allow_list_a_development_build_cannot_serve_is_refused_before_podman() {
    smol::block_on(async {
        let (ex, runner, _dir) = executor(vec![RecordingRunner::ok("[]")], Profile::Open);
        let mut req = create_req("box", Profile::Standard);
        req.allowed_domains = vec!["pypi.org".into()];
        let reply = ex.call(Body::ContainerCreate(req)).await;
        let (code, message) = error_of(&reply);
        assert_eq!(code, ErrorCode::Unsupported, "{message}");
        assert!(message.contains("cannot serve an allow-list"), "{message}");
        assert!(
            runner.full_calls().iter().all(|c| c.args[0] != "create"),
            "nothing was created"
        );
    });
}
