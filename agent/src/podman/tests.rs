//! Unit tests of the Podman seam: argv building and output parsing against
//! the recording runner, the process runner's deadline and error capture,
//! and the real Podman (which these tests require: they fail without it).

use super::*;
use futures_lite::FutureExt;
use protocol::container::{ContainerState, Profile};

fn fake(answers: Vec<RunOutput>) -> (Podman, Arc<RecordingRunner>) {
    let runner = Arc::new(RecordingRunner::new(answers));
    (Podman::with_runner("podman", runner.clone()), runner)
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|s| (*s).to_owned()).collect()
}

const PS_JSON: &str = r#"[
  {"Id": "3e94", "Names": ["crops-abc"], "Image": "localhost/busybox:latest",
   "State": "running", "Created": 1795968553,
   "Labels": {"crops.managed": "true", "crops.tenant": "t1", "crops.container-id": "c1",
              "crops.profile": "strict", "crops.allowed-domains": "pypi.org,*.example.com"}},
  {"Id": "77aa", "Names": null, "Image": "img", "State": "exited", "Created": 0,
   "Labels": {"crops.managed": "true", "crops.tenant": "t2", "crops.container-id": "c2"}},
  {"Id": "0bad", "Names": ["stray"], "Image": "img", "State": "created",
   "Labels": {"crops.managed": "true"}}
]"#;

#[test]
fn list_managed_filters_by_label_and_maps_fields() {
    smol::block_on(async {
        let (podman, runner) = fake(vec![RecordingRunner::ok(PS_JSON)]);
        let list = podman.list_all().await.unwrap();
        assert_eq!(
            runner.calls(),
            vec![argv(&[
                "ps",
                "--all",
                "--format",
                "json",
                "--filter",
                "label=crops.managed=true"
            ])]
        );
        assert_eq!(
            list.len(),
            2,
            "the container without id/tenant labels is skipped"
        );
        assert_eq!(
            list[0],
            ContainerInfo {
                container_id: "c1".into(),
                tenant_id: "t1".into(),
                engine_id: "3e94".into(),
                name: "crops-abc".into(),
                image: "localhost/busybox:latest".into(),
                state: ContainerState::Running,
                profile: Some(Profile::Strict),
                created_at: Some(1_795_968_553_000),
                allowed_domains: Some(vec!["pypi.org".into(), "*.example.com".into()]),
            }
        );
        assert_eq!(
            (
                list[1].name.as_str(),
                list[1].state,
                list[1].created_at,
                &list[1].allowed_domains
            ),
            ("", ContainerState::Exited, None, &None)
        );
    });
}

#[test]
fn list_managed_of_one_tenant() {
    smol::block_on(async {
        let (podman, _) = fake(vec![RecordingRunner::ok(PS_JSON)]);
        let list = podman.list_managed(Some("t2")).await.unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].container_id, "c2");
    });
}

#[test]
fn empty_and_null_listings_are_empty() {
    smol::block_on(async {
        let (podman, _) = fake(vec![RecordingRunner::ok("[]"), RecordingRunner::ok("null")]);
        assert!(podman.list_all().await.unwrap().is_empty());
        assert!(podman.images().await.unwrap().is_empty());
    });
}

#[test]
fn images_are_parsed() {
    smol::block_on(async {
        let json = r#"[{"Id": "10c9", "Names": ["localhost/crops-test/busybox:latest"],
                        "Size": 2131069, "Created": 1795968537, "Labels": null},
                       {"Id": "dang", "Names": null, "Size": 5}]"#;
        let (podman, runner) = fake(vec![RecordingRunner::ok(json)]);
        let images = podman.images().await.unwrap();
        assert_eq!(runner.calls(), vec![argv(&["images", "--format", "json"])]);
        assert_eq!(
            images[0],
            ImageInfo {
                id: "10c9".into(),
                names: vec!["localhost/crops-test/busybox:latest".into()],
                size_bytes: 2_131_069,
                created_at: Some(1_795_968_537_000),
            }
        );
        assert_eq!((images[1].names.len(), images[1].created_at), (0, None));
    });
}

#[test]
fn version_graph_root_and_running_count() {
    smol::block_on(async {
        let (podman, runner) = fake(vec![
            RecordingRunner::ok("podman version 4.3.1\n"),
            RecordingRunner::ok(
                r#"{"host": {}, "store": {"graphRoot": "/var/lib/containers/storage"}}"#,
            ),
            RecordingRunner::ok("aaa\nbbb\n\n"),
        ]);
        assert_eq!(podman.version().await.unwrap(), "4.3.1");
        assert_eq!(
            podman.graph_root().await.unwrap(),
            PathBuf::from("/var/lib/containers/storage")
        );
        assert_eq!(podman.running_count().await.unwrap(), 2);
        assert_eq!(
            runner.calls(),
            vec![
                argv(&["--version"]),
                argv(&["info", "--format", "json"]),
                argv(&["ps", "--quiet", "--no-trunc"]),
            ]
        );
    });
}

#[test]
fn failures_carry_verb_status_and_stderr_tail() {
    smol::block_on(async {
        let mut stderr = vec![b'x'; 5000];
        stderr.extend_from_slice(b"Error: no such container\n");
        let (podman, _) = fake(vec![RunOutput {
            success: false,
            code: Some(125),
            status: "exit status: 125".into(),
            stderr,
            ..RunOutput::default()
        }]);
        match podman.list_all().await.unwrap_err() {
            PodmanError::Failed {
                verb,
                status,
                stderr,
            } => {
                assert_eq!(verb, "ps");
                assert_eq!(status, "exit status: 125");
                assert!(stderr.ends_with("Error: no such container"), "{stderr}");
                assert!(stderr.len() <= STDERR_TAIL, "{}", stderr.len());
            }
            other => panic!("unexpected {other:?}"),
        }
    });
}

#[test]
fn garbage_output_is_a_parse_error_not_a_panic() {
    smol::block_on(async {
        let (podman, _) = fake(vec![
            RecordingRunner::ok("{not json"),
            RecordingRunner::ok(r#"[{"NoId": 1}]"#),
            RecordingRunner::ok(r#"{"store": {}}"#),
        ]);
        assert!(matches!(
            podman.images().await,
            Err(PodmanError::Parse { .. })
        ));
        assert!(matches!(
            podman.list_all().await,
            Err(PodmanError::Parse { .. })
        ));
        assert!(matches!(
            podman.graph_root().await,
            Err(PodmanError::Unexpected { .. })
        ));
    });
}

#[test]
fn the_process_runner_kills_a_call_past_its_deadline() {
    smol::block_on(async {
        let start = std::time::Instant::now();
        let call = Call::new(argv(&["30"]), Duration::from_millis(200));
        let out = ProcessRunner.run(Path::new("sleep"), &call).await.unwrap();
        assert!(out.timed_out && out.code.is_none(), "{out:?}");
        assert!(start.elapsed() < Duration::from_secs(10));
        let err = Podman::new("sleep")
            .call(&["30"], Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(
            matches!(err, PodmanError::Timeout { ref verb, .. } if verb == "30"),
            "{err}"
        );
    });
}

#[test]
fn the_process_runner_captures_failures_and_missing_programs() {
    smol::block_on(async {
        let podman = Podman::new("ls");
        let err = podman
            .call(&["/nonexistent-crops-path"], QUICK)
            .await
            .unwrap_err();
        match err {
            PodmanError::Failed {
                verb,
                status,
                stderr,
            } => {
                assert_eq!(verb, "/nonexistent-crops-path");
                assert!(status.contains('2'), "{status}");
                assert!(stderr.contains("nonexistent-crops-path"), "{stderr}");
            }
            other => panic!("unexpected {other:?}"),
        }
        let missing = Podman::new("/nonexistent/podman");
        assert!(matches!(
            missing.version().await,
            Err(PodmanError::Spawn { .. })
        ));
    });
}

/// The project's containers.conf (runc, ulimits), for every real podman call.
fn test_env() -> Vec<(String, String)> {
    let conf = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/podman/containers.conf"
    );
    vec![("CONTAINERS_CONF".into(), conf.into())]
}

/// Output is capped per stream and the rest drained, so a chatty child still ends.
#[test]
fn the_process_runner_caps_output_and_keeps_reading() {
    smol::block_on(async {
        let mut call = Call::new(
            argv(&["-c", "head -c 3000000 /dev/zero; head -c 10 /dev/zero >&2"]),
            Duration::from_secs(30),
        );
        call.cap = 1000;
        call.env = vec![("X_CROPS_TEST".into(), "v".into())];
        let out = ProcessRunner.run(Path::new("sh"), &call).await.unwrap();
        assert_eq!(
            (out.code, out.stdout.len(), out.stdout_truncated),
            (Some(0), 1000, true)
        );
        assert_eq!((out.stderr.len(), out.stderr_truncated), (10, false));
    });
}

/// Every call waits for a permit of its lane; lifecycle has its own.
#[test]
fn lanes_bound_concurrency_separately() {
    smol::block_on(async {
        let podman = Podman::new("sleep").with_limits(Limits {
            work: 1,
            lifecycle: 1,
        });
        let _held = podman.work.acquire().await;
        // The work lane is full, yet a lifecycle call runs.
        let call = Call::new(argv(&["0"]), Duration::from_secs(10)).lifecycle();
        assert!(podman.run(call).await.unwrap().success);
        let queued = podman.run(Call::new(argv(&["0"]), Duration::from_secs(10)));
        let waited = async { Some(queued.await) }
            .or(async {
                smol::Timer::after(Duration::from_millis(300)).await;
                None
            })
            .await;
        assert!(waited.is_none(), "a work call ran without a permit");
    });
}

/// The real Podman. Fails (does not skip) when Podman is not installed.
#[test]
fn real_podman_answers_every_query() {
    smol::block_on(async {
        let podman = Podman::new("podman").with_env(test_env());
        let version = podman
            .version()
            .await
            .expect("podman must be installed for these tests");
        assert!(
            version.chars().next().is_some_and(|c| c.is_ascii_digit()),
            "{version}"
        );
        let root = podman.graph_root().await.unwrap();
        assert!(root.is_absolute(), "{}", root.display());
        podman.running_count().await.unwrap();
        podman.list_all().await.unwrap();
        podman.images().await.unwrap();
    });
}
