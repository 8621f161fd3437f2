//! Every container command against the real Podman, through the command
//! layer (`Executor::call`: a protocol body in, the one reply body out).

use std::collections::BTreeMap;

use agent::Git;
use agent::Limits;
use protocol::container::*;
use protocol::exec::{BackgroundCapture, BackgroundKill, ExecBackground};
use protocol::image::ImageBuild;
use protocol::{Body, Envelope, ErrorCode};

use crate::support::*;
use crate::within;

#[test]
fn a_container_lives_from_create_to_remove() {
    smol::block_on(within(180, "the lifecycle", async {
        let tmp = std::env::temp_dir().join(unique("repo"));
        let bare = git_repo(&tmp);
        let gitconfig = tmp.join("gitconfig");
        std::fs::write(
            &gitconfig,
            format!(
                "[url \"file://{}\"]\n\tinsteadOf = https://git.crops.test/demo.git\n",
                bare.display()
            ),
        )
        .unwrap();
        let git = Git::default().with_env(vec![(
            "GIT_CONFIG_GLOBAL".into(),
            gitconfig.display().to_string(),
        )]);
        let rig = Rig::with("life", Profile::Open, Limits::default(), Some(git));
        let id = unique("life");
        let mut req = rig.create_req(&id, Profile::Standard, &["sleep", "3600"]);
        req.env.insert("GREETING".into(), "hi $(there); `x`".into());
        req.env.insert("PATH".into(), "/bin:/usr/bin".into());
        req.labels.insert("team".into(), "blue".into());
        let created = expect_created(rig.call(Body::ContainerCreate(req)).await);
        assert!(created.created);
        assert_eq!(created.container.state, ContainerState::Created);

        let setup = ContainerSetup {
            container_id: id.clone(),
            repository: Some(Repository {
                url: "https://git.crops.test/demo.git".into(),
                branch: Some("main".into()),
                token: None,
            }),
            files: vec![TaskFile {
                path: ".crops/task.md".into(),
                content: "do the thing\n".into(),
                mode: Some(0o600),
            }],
        };
        let reply = rig.call(Body::ContainerSetup(setup.clone())).await;
        let Body::ContainerSetupDone(done) = reply else {
            panic!("setup: {reply:?}")
        };
        assert_eq!(done.files_written, 1);
        let commit = done.commit.expect("a commit");
        assert_eq!(commit.len(), 40, "{commit}");
        // A retried setup finds the clone done and the same commit.
        let Body::ContainerSetupDone(again) = rig.call(Body::ContainerSetup(setup)).await else {
            panic!()
        };
        assert_eq!(again.commit.as_deref(), Some(commit.as_str()));

        rig.call(Body::ContainerStart(ContainerRef {
            container_id: id.clone(),
        }))
        .await;
        let r = rig.exec(&id, &["sh", "-c", "cat /workspace/README.md /workspace/.crops/task.md; echo \"$GREETING\"; echo $PATH; pwd"]).await;
        assert_eq!(
            r.stdout,
            "hello from the repo\ndo the thing\nhi $(there); `x`\n/bin:/usr/bin\n/workspace\n",
            "stderr: {}",
            r.stderr
        );
        assert_eq!(r.exit_code, Some(0));

        let Body::ContainerListed(list) = rig
            .call(Body::ContainerList(ContainerList {
                tenant_id: rig.tenant.clone(),
            }))
            .await
        else {
            panic!()
        };
        assert_eq!(list.containers.len(), 1);
        let info = &list.containers[0];
        assert_eq!(
            (info.container_id.as_str(), info.tenant_id.as_str()),
            (id.as_str(), rig.tenant.as_str())
        );
        assert_eq!(
            (info.state, info.profile),
            (ContainerState::Running, Some(Profile::Standard))
        );
        let labels = &rig.inspect(&info.engine_id)["Config"]["Labels"];
        assert_eq!(labels["crops.managed"], "true");
        assert_eq!(labels["crops.profile"], "standard");
        assert_eq!(labels["team"], "blue");
        let Body::ContainerListedAll(all) = rig.call(Body::ContainerListAll(Empty {})).await else {
            panic!()
        };
        assert!(all.containers.iter().any(|c| c.container_id == id));

        let Body::ContainerStatsResult(stats) = rig
            .call(Body::ContainerStats(ContainerStatsRequest {
                container_id: Some(id.clone()),
            }))
            .await
        else {
            panic!()
        };
        assert_eq!(stats.stats.len(), 1, "{stats:?}");
        let s = &stats.stats[0];
        assert_eq!(s.container_id, id);
        assert!(s.pids >= 1 && s.memory_used > 0, "{s:?}");
        assert_eq!(s.memory_limit, Some(4 << 30));
        assert!(s.disk_used.is_some(), "{s:?}");

        let stop = ContainerStop {
            container_id: id.clone(),
            timeout_secs: Some(1),
        };
        assert_eq!(
            rig.call(Body::ContainerStop(stop)).await,
            Body::ContainerStopped(ContainerStatus {
                container_id: id.clone(),
                state: ContainerState::Exited
            })
        );
        let (code, msg) = error_of(&rig.call(exec_body(&id, &["true"])).await);
        assert_eq!(code, ErrorCode::Conflict, "{msg}");

        let remove = || {
            Body::ContainerRemove(ContainerRemove {
                container_id: id.clone(),
                force: false,
            })
        };
        assert!(matches!(
            rig.call(remove()).await,
            Body::ContainerRemoved(_)
        ));
        assert!(
            !rig.workspace(&id).exists(),
            "the workspace goes with the container"
        );
        assert!(engine_ids_labelled(&id).is_empty());
        assert_eq!(error_of(&rig.call(remove()).await).0, ErrorCode::NotFound);
        let _ = std::fs::remove_dir_all(tmp);
    }));
}

#[test]
fn the_same_create_delivered_three_times_makes_one_container() {
    smol::block_on(within(120, "three creates", async {
        let rig = Rig::new("idem");
        let id = unique("idem");
        let req = rig.create_req(&id, Profile::Strict, &["sleep", "3600"]);
        let replies = futures_util::future::join_all(
            (0..3).map(|_| rig.call(Body::ContainerCreate(req.clone()))),
        )
        .await;
        let created: Vec<ContainerCreated> = replies.into_iter().map(expect_created).collect();
        assert_eq!(
            created.iter().filter(|c| c.created).count(),
            1,
            "{created:?}"
        );
        let engine = &created[0].container.engine_id;
        assert!(created.iter().all(|c| &c.container.engine_id == engine));
        // And once more, after the fact.
        let late = expect_created(rig.call(Body::ContainerCreate(req)).await);
        assert!(!late.created);
        assert_eq!(&late.container.engine_id, engine);
        assert_eq!(engine_ids_labelled(&id), vec![engine.clone()]);
    }));
}

#[test]
fn bad_input_gets_clear_errors_and_the_agent_keeps_serving() {
    smol::block_on(within(180, "bad input", async {
        let rig = Rig::new("bad");
        let id = unique("bad");
        for name in ["--privileged", "a b", "x;reboot", ""] {
            let (code, msg) = error_of(
                &rig.call(Body::ContainerCreate(rig.create_req(
                    name,
                    Profile::Standard,
                    &["true"],
                )))
                .await,
            );
            assert_eq!(code, ErrorCode::InvalidArgument, "{name}: {msg}");
            assert!(msg.contains("containerId") || msg.contains("name"), "{msg}");
        }
        let mut req = rig.create_req(&id, Profile::Standard, &["true"]);
        req.image = "localhost/crops-test/no-such-image:latest".into();
        let (code, msg) = error_of(&rig.call(Body::ContainerCreate(req)).await);
        assert_eq!(code, ErrorCode::NotFound);
        assert!(msg.contains("image not known"), "Podman's message: {msg}");
        assert!(engine_ids_labelled(&id).is_empty());
        assert!(!rig.workspace(&id).exists());

        assert_eq!(
            error_of(&rig.call(exec_body("no-such-container", &["true"])).await).0,
            ErrorCode::NotFound
        );

        rig.running(&id, Profile::Standard).await;
        let r = rig.exec(&id, &["echo", "$(id); rm -rf /"]).await;
        assert_eq!(
            (r.exit_code, r.stdout.as_str()),
            (Some(0), "$(id); rm -rf /\n")
        );
        let r = rig
            .exec(
                &id,
                &[
                    "sh",
                    "-c",
                    "echo \"$1\"",
                    "sh",
                    "`reboot` && $(halt) | > /x",
                ],
            )
            .await;
        assert_eq!(r.stdout, "`reboot` && $(halt) | > /x\n");

        let r = rig.exec(&id, &["no-such-binary"]).await;
        assert_eq!(r.exit_code, Some(127), "{r:?}");
        assert!(r.stderr.contains("not found"), "{}", r.stderr);

        let r = rig.exec(&id, &["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' a; head -c 300000 /dev/zero | tr '\\0' b >&2; exit 3"]).await;
        assert_eq!(r.exit_code, Some(3));
        assert_eq!(
            (r.stdout.len(), r.stdout_truncated),
            (protocol::exec::EXEC_OUTPUT_CAP, true)
        );
        assert_eq!(
            (r.stderr.len(), r.stderr_truncated),
            (protocol::exec::EXEC_OUTPUT_CAP, true)
        );

        // Still serving.
        let r = rig.exec(&id, &["echo", "ok"]).await;
        assert_eq!(r.stdout, "ok\n");
        assert!(matches!(
            rig.call(Body::ContainerListAll(Empty {})).await,
            Body::ContainerListedAll(_)
        ));
    }));
}

#[test]
fn an_exec_past_its_deadline_is_killed_inside_the_container() {
    smol::block_on(within(120, "exec timeout", async {
        let rig = Rig::new("tmo");
        let id = unique("tmo");
        rig.running(&id, Profile::Standard).await;
        let mut body = exec_body(&id, &["sh", "-c", "echo started; sleep 987"]);
        if let Body::Exec(e) = &mut body {
            e.timeout_secs = Some(1);
        }
        let Body::ExecDone(r) = rig.call(body).await else {
            panic!()
        };
        assert!(r.timed_out && r.exit_code.is_none(), "{r:?}");
        assert_eq!(r.stdout, "started\n", "output before the deadline is kept");
        let ps = rig.exec(&id, &["ps"]).await;
        assert!(
            !ps.stdout.contains("sleep 987"),
            "the command outlived its timeout:\n{}",
            ps.stdout
        );
    }));
}

#[test]
fn a_background_command_is_captured_by_offset_and_killed() {
    smol::block_on(within(120, "background", async {
        let rig = Rig::new("bg");
        let id = unique("bg");
        rig.running(&id, Profile::Standard).await;
        let start = ExecBackground {
            container_id: id.clone(),
            command: vec![
                "sh".into(),
                "-c".into(),
                "echo one; echo two >&2; echo \"$V\"; exec sleep 876".into(),
            ],
            env: BTreeMap::from([("V".into(), "three".into())]),
            workdir: None,
        };
        let Body::BackgroundStarted(started) = rig.call(Body::ExecBackground(start)).await else {
            panic!()
        };
        let capture = |offset| {
            Body::BackgroundCapture(BackgroundCapture {
                container_id: id.clone(),
                handle: started.handle.clone(),
                offset,
            })
        };
        // Wait for the output by asking for it (a condition, not a fixed delay).
        let out = loop {
            let Body::BackgroundOutput(out) = rig.call(capture(0)).await else {
                panic!()
            };
            if out.output.lines().count() == 3 {
                break out;
            }
            smol::Timer::after(std::time::Duration::from_millis(50)).await;
        };
        let mut lines: Vec<&str> = out.output.lines().collect();
        lines.sort_unstable();
        assert_eq!(
            lines,
            ["one", "three", "two"],
            "stdout and stderr interleaved"
        );
        assert_eq!(
            (out.first_offset, out.next_offset, out.running),
            (0, 14, true)
        );
        let Body::BackgroundOutput(rest) = rig.call(capture(out.next_offset)).await else {
            panic!()
        };
        assert_eq!((rest.output.as_str(), rest.next_offset), ("", 14));

        let kill = || {
            Body::BackgroundKill(BackgroundKill {
                container_id: id.clone(),
                handle: started.handle.clone(),
            })
        };
        assert_eq!(
            rig.call(kill()).await,
            Body::BackgroundKilled(protocol::exec::BackgroundKilled { killed: true })
        );
        loop {
            let Body::BackgroundOutput(out) = rig.call(capture(0)).await else {
                panic!()
            };
            if !out.running {
                break;
            }
            smol::Timer::after(std::time::Duration::from_millis(50)).await;
        }
        let ps = rig.exec(&id, &["ps"]).await;
        assert!(!ps.stdout.contains("sleep 876"), "{}", ps.stdout);
        assert_eq!(
            rig.call(kill()).await,
            Body::BackgroundKilled(protocol::exec::BackgroundKilled { killed: false })
        );
        let other = BackgroundCapture {
            container_id: id.clone(),
            handle: "bg-nope".into(),
            offset: 0,
        };
        assert_eq!(
            error_of(&rig.call(Body::BackgroundCapture(other)).await).0,
            ErrorCode::NotFound
        );
    }));
}

#[test]
fn an_image_build_streams_progress_then_answers() {
    smol::block_on(within(180, "a build", async {
        let rig = Rig::new("build");
        let tag = format!("localhost/{}:1", unique("img"));
        let body = Body::ImageBuild(ImageBuild {
            tag: tag.clone(),
            containerfile: format!("FROM {IMAGE}\nRUN echo built-here > /built\n"),
            tenant_id: Some(rig.tenant.clone()),
        });
        let (tx, rx) = smol::channel::unbounded();
        let reply = rig.ex.handle("b-1".into(), body, &tx).await;
        let mut events = 0;
        let mut lines = Vec::new();
        while let Ok(Envelope {
            request_id,
            body: Body::BuildProgress(p),
        }) = rx.try_recv()
        {
            assert_eq!(request_id.as_deref(), Some("b-1"));
            events += 1;
            // An event carries one or more lines (batched at most 10 a second).
            lines.extend(p.line.lines().map(str::to_owned));
        }
        assert!(
            events >= 1 && events <= lines.len(),
            "{events} events, {lines:#?}"
        );
        podman(&["rmi", "--force", &tag], false);
        let Body::ImageBuilt(built) = reply.body else {
            panic!("{reply:?}\n{lines:#?}")
        };
        assert_eq!(built.tag, tag);
        assert!(lines.iter().any(|l| l.contains("STEP 2/")), "{lines:#?}");
        assert!(
            lines.iter().any(|l| l.starts_with(&built.image_id[..10])),
            "{lines:#?}"
        );

        let missing = Body::ImageBuild(ImageBuild {
            tag: "localhost/crops-never:1".into(),
            containerfile: "FROM localhost/crops-test/no-such-base:1\n".into(),
            tenant_id: None,
        });
        let (code, msg) = error_of(&rig.call(missing).await);
        assert_eq!(code, ErrorCode::NotFound, "{msg}");
        assert!(
            matches!(rig.call(Body::ImagesList(Empty {})).await, Body::ImagesListed(l) if l.images.iter().any(|i| i.names.iter().any(|n| n == IMAGE)))
        );
    }));
}

/// A fake git that records its argv and environment, to prove where a token goes.
#[test]
fn a_repository_token_travels_only_in_gits_environment() {
    smol::block_on(within(120, "setup with a token", async {
        let tmp = std::env::temp_dir().join(unique("fakegit"));
        std::fs::create_dir_all(&tmp).unwrap();
        let script = tmp.join("git");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nif [ \"$1\" = -C ]; then echo 0123456789abcdef0123456789abcdef01234567; exit 0; fi\n\
                 printf '%s\\n' \"$@\" > {d}/argv\nenv > {d}/env\n",
                d = tmp.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let rig = Rig::with(
            "token",
            Profile::Open,
            Limits::default(),
            Some(Git::new(&script)),
        );
        let setup = |id: &str| {
            Body::ContainerSetup(ContainerSetup {
                container_id: id.into(),
                repository: Some(Repository {
                    url: "https://git.example.com/private.git".into(),
                    branch: None,
                    token: Some("tok-s3cret".into()),
                }),
                files: vec![],
            })
        };
        let id = unique("tok");
        expect_created(
            rig.call(Body::ContainerCreate(rig.create_req(
                &id,
                Profile::Standard,
                &["true"],
            )))
            .await,
        );
        let reply = rig.call(setup(&id)).await;
        assert!(
            matches!(reply, Body::ContainerSetupDone(ref d) if d.commit.is_some()),
            "{reply:?}"
        );
        let argv = std::fs::read_to_string(tmp.join("argv")).unwrap();
        let ws = rig.workspace(&id);
        assert_eq!(
            argv,
            format!(
                "clone\n--depth\n1\n--\nhttps://git.example.com/private.git\n{}\n",
                ws.display()
            )
        );
        let env = std::fs::read_to_string(tmp.join("env")).unwrap();
        assert!(env.contains("GIT_TERMINAL_PROMPT=0\n"));
        assert!(env.contains("GIT_CONFIG_KEY_0=http.extraHeader\n"));
        // base64("x-access-token:tok-s3cret")
        let header =
            "GIT_CONFIG_VALUE_0=Authorization: Basic eC1hY2Nlc3MtdG9rZW46dG9rLXMzY3JldA==\n";
        assert!(env.contains(header), "{env}");

        // Offline containers get no secrets.
        let off = unique("off");
        expect_created(
            rig.call(Body::ContainerCreate(rig.create_req(
                &off,
                Profile::Offline,
                &["true"],
            )))
            .await,
        );
        let (code, msg) = error_of(&rig.call(setup(&off)).await);
        assert_eq!(code, ErrorCode::Forbidden, "{msg}");
        let _ = std::fs::remove_dir_all(tmp);
    }));
}
