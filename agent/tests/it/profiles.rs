//! Security profiles on real containers: what `podman inspect` shows for each
//! profile, and what a process inside can (not) do: write to `/` under
//! Strict, reach any interface but `lo` under Offline, fork past the pids
//! limit. Plus the worker's security floor.

use agent::Limits;
use protocol::container::Profile;
use protocol::{Body, ErrorCode};
use serde_json::json;

use crate::support::*;
use crate::within;

#[test]
fn each_profile_shows_its_flags_in_podman_inspect() {
    smol::block_on(within(180, "four profiles", async {
        let rig = Rig::new("inspect");
        let mut seen = Vec::new();
        for p in [
            Profile::Open,
            Profile::Standard,
            Profile::Strict,
            Profile::Offline,
        ] {
            let id = unique("prof");
            let req = rig.create_req(&id, p, &["sleep", "3600"]);
            let c = expect_created(rig.call(Body::ContainerCreate(req)).await);
            let hc = rig.inspect(&c.container.engine_id)["HostConfig"].clone();
            seen.push((p, hc));
        }
        for (p, hc) in &seen {
            let fields = json!({
                "NetworkMode": hc["NetworkMode"], "ReadonlyRootfs": hc["ReadonlyRootfs"],
                "Memory": hc["Memory"], "NanoCpus": hc["NanoCpus"], "PidsLimit": hc["PidsLimit"],
            });
            let expected = match p {
                Profile::Open => json!({"NetworkMode": "host", "ReadonlyRootfs": false,
                    "Memory": 4_u64 << 30, "NanoCpus": 0, "PidsLimit": hc["PidsLimit"]}),
                Profile::Standard => json!({"NetworkMode": "none", "ReadonlyRootfs": false,
                    "Memory": 4_u64 << 30, "NanoCpus": 2_000_000_000_u64, "PidsLimit": 256}),
                Profile::Strict => json!({"NetworkMode": "none", "ReadonlyRootfs": true,
                    "Memory": 2_u64 << 30, "NanoCpus": 1_000_000_000_u64, "PidsLimit": 128}),
                Profile::Offline => json!({"NetworkMode": "none", "ReadonlyRootfs": true,
                    "Memory": 2_u64 << 30, "NanoCpus": 1_000_000_000_u64, "PidsLimit": 128}),
            };
            assert_eq!(fields, expected, "{p:?}");
            let cap_drop = hc["CapDrop"].as_array().map(Vec::len).unwrap_or(0);
            let nnp = hc["SecurityOpt"]
                .as_array()
                .is_some_and(|o| o.iter().any(|s| s == "no-new-privileges"));
            if *p == Profile::Open {
                assert_eq!((cap_drop, nnp), (0, false), "Open keeps capabilities");
                assert!(
                    hc["PidsLimit"].as_i64().is_none_or(|l| l <= 0),
                    "Open: no pids limit: {}",
                    hc["PidsLimit"]
                );
            } else {
                assert!(
                    cap_drop >= 10,
                    "{p:?} drops every capability: {}",
                    hc["CapDrop"]
                );
                assert!(nnp, "{p:?}: {}", hc["SecurityOpt"]);
            }
        }
    }));
}

#[test]
fn strict_is_read_only_but_scratch_and_workspace_are_writable_and_pids_are_capped() {
    smol::block_on(within(180, "inside a strict container", async {
        let rig = Rig::new("strict");
        let id = unique("strict");
        rig.running(&id, Profile::Strict).await;
        let r = rig.exec(&id, &["sh", "-c", "touch /probe"]).await;
        assert_ne!(r.exit_code, Some(0));
        assert!(r.stderr.contains("Read-only file system"), "{}", r.stderr);
        let r = rig
            .exec(
                &id,
                &[
                    "sh",
                    "-c",
                    "touch /tmp/a && touch /workspace/out && echo ok",
                ],
            )
            .await;
        assert_eq!(r.stdout, "ok\n", "{}", r.stderr);
        assert!(
            rig.workspace(&id).join("out").exists(),
            "the workspace is the host directory"
        );
        // 200 sleepers against a limit of 128.
        let r = rig
            .exec(
                &id,
                &[
                    "sh",
                    "-c",
                    "i=0; while [ $i -lt 200 ]; do sleep 300 & i=$((i+1)); done; echo spawned",
                ],
            )
            .await;
        assert!(
            r.stderr.contains("can't fork")
                || r.stderr.contains("Resource temporarily unavailable"),
            "pids limit did not hold: {r:?}"
        );
        let count = rig
            .exec(&id, &["cat", "/sys/fs/cgroup/pids/pids.current"])
            .await;
        if let Ok(n) = count.stdout.trim().parse::<u32>() {
            assert!(n <= 128, "{n} pids");
        }
        let quota = rig
            .exec(
                &id,
                &[
                    "cat",
                    "/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
                    "/sys/fs/cgroup/cpu/cpu.cfs_period_us",
                ],
            )
            .await;
        if quota.exit_code == Some(0) {
            assert_eq!(
                quota.stdout, "100000\n100000\n",
                "--cpus 1 is a CFS quota of one period"
            );
        }
    }));
}

#[test]
fn offline_and_standard_have_no_interface_but_loopback() {
    smol::block_on(within(120, "inside an offline container", async {
        let rig = Rig::new("offline");
        let (off, std) = (unique("off"), unique("std"));
        rig.running(&off, Profile::Offline).await;
        rig.running(&std, Profile::Standard).await;
        let r = rig.exec(&off, &["ls", "/sys/class/net"]).await;
        assert_eq!(r.stdout.split_whitespace().collect::<Vec<_>>(), ["lo"]);
        // Standard's way out is its egress gate, not an interface.
        let r = rig.exec(&std, &["ls", "/sys/class/net"]).await;
        assert_eq!(r.stdout.split_whitespace().collect::<Vec<_>>(), ["lo"]);
        let r = rig.exec(&off, &["touch", "/x"]).await;
        assert_ne!(r.exit_code, Some(0), "offline is read-only too");
    }));
}

#[test]
fn the_security_floor_refuses_weaker_profiles() {
    smol::block_on(within(120, "the floor", async {
        let rig = Rig::with("floor", Profile::Strict, Limits::default(), None);
        let weak = unique("weak");
        let (code, msg) = error_of(
            &rig.call(Body::ContainerCreate(rig.create_req(
                &weak,
                Profile::Standard,
                &["true"],
            )))
            .await,
        );
        assert_eq!(code, ErrorCode::Forbidden);
        assert!(msg.contains("security floor (strict)"), "{msg}");
        assert!(engine_ids_labelled(&weak).is_empty());
        let ok = unique("ok");
        assert!(
            expect_created(
                rig.call(Body::ContainerCreate(rig.create_req(
                    &ok,
                    Profile::Offline,
                    &["true"]
                )))
                .await
            )
            .created
        );
    }));
}
