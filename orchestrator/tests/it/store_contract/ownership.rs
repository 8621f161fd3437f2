//! Replicas and the ownership of workers on both engines: the newest
//! register owns a worker and fences every write of older connections; a
//! live replica's identity is refused to a second process.

use orchestrator::store::{HeartbeatRecord, Plan, ReplicaRecord, StoreError};

use super::{each_engine, register, registered, tenant};
use crate::harness::now_ms;

fn beat(cpu: f64) -> HeartbeatRecord {
    HeartbeatRecord {
        at: now_ms(),
        cpu_usage: cpu,
        memory_free: 1,
        disk_total: None,
        disk_free: None,
        containers_running: 0,
        gateway_status: None,
        gateway_status_detail: None,
    }
}

#[test]
fn the_newest_register_owns_the_worker_and_fences_the_older_connections_writes() {
    each_engine(|engine, store| {
        let t = tenant(&store, "acme", Plan::Enterprise);
        let old = registered(&store, &t.id, "w1", "replica-a");
        store.record_heartbeat("w1", old, &beat(1.0)).unwrap();
        let new = register(&store, "w1", "replica-b");
        assert!(new > old, "{engine:?}");
        let owner = store.worker_owner("w1").unwrap().unwrap();
        assert_eq!((owner.replica.as_str(), owner.epoch), ("replica-b", new));
        let fenced = store.record_heartbeat("w1", old, &beat(2.0)).unwrap_err();
        assert!(
            matches!(fenced, StoreError::Fenced { .. }),
            "{engine:?}: {fenced}"
        );
        let fenced = store.reconcile("w1", old, &[], 0, now_ms()).unwrap_err();
        assert!(
            matches!(fenced, StoreError::Fenced { .. }),
            "{engine:?}: {fenced}"
        );
        // What the old connection sent never landed.
        assert_eq!(store.heartbeat("w1").unwrap().unwrap().cpu_usage, 1.0);
        store.record_heartbeat("w1", new, &beat(3.0)).unwrap();
        assert_eq!(store.heartbeat("w1").unwrap().unwrap().cpu_usage, 3.0);
    });
}

#[test]
fn a_live_replica_identity_is_refused_to_another_process_until_it_goes_stale() {
    each_engine(|engine, store| {
        let now = now_ms();
        let first = ReplicaRecord {
            id: "eu-1".into(),
            address: Some("https://10.0.0.1:8443".into()),
            started_ms: now,
            beat_ms: now,
        };
        store.register_replica(&first, 30_000).unwrap();
        let second = ReplicaRecord {
            started_ms: now + 1,
            beat_ms: now + 1,
            ..first.clone()
        };
        let taken = store.register_replica(&second, 30_000).unwrap_err();
        assert!(
            matches!(taken, StoreError::ReplicaTaken { .. }),
            "{engine:?}: {taken}"
        );
        let listed = store.replicas().unwrap();
        assert_eq!(listed, vec![first.clone()], "{engine:?}: nothing written");
        let later = ReplicaRecord {
            started_ms: now + 60_000,
            beat_ms: now + 60_000,
            ..first
        };
        store.register_replica(&later, 30_000).unwrap();
        let lost = store.beat_replica("eu-1", now, now + 60_001).unwrap_err();
        assert!(
            matches!(lost, StoreError::ReplicaTaken { .. }),
            "{engine:?}: {lost}"
        );
    });
}

/// A replica's batch holds every agent it serves (thousands): the owners
/// are read and the beats written in one statement each on PostgreSQL,
/// and every one is still checked and stored as if written one by one.
#[test]
fn a_large_batch_of_heartbeats_checks_and_stores_each_one() {
    each_engine(|engine, store| {
        let t = tenant(&store, "acme", Plan::Enterprise);
        let mut batch = Vec::new();
        for i in 0..120 {
            let id = format!("w{i:03}");
            let epoch = registered(&store, &t.id, &id, "replica-a");
            // Every third worker has moved on to another replica since.
            if i % 3 == 0 {
                register(&store, &id, "replica-b");
            }
            batch.push((id, epoch, beat(f64::from(i))));
        }
        batch.push(("gone".to_owned(), 1, beat(0.5)));
        let refused = store.record_heartbeats(&batch).unwrap();
        let expected: Vec<String> = (0..120)
            .filter(|i| i % 3 == 0)
            .map(|i| format!("w{i:03}"))
            .chain(["gone".to_owned()])
            .collect();
        assert_eq!(refused, expected, "{engine:?}");
        for i in 0..120 {
            let stored = store.heartbeat(&format!("w{i:03}")).unwrap();
            let cpu = stored.map(|b| b.cpu_usage);
            let want = (i % 3 != 0).then_some(f64::from(i));
            assert_eq!(cpu, want, "{engine:?}: w{i:03}");
        }
    });
}

#[test]
fn a_batch_of_heartbeats_stores_the_owners_and_refuses_the_fenced_and_the_unknown() {
    each_engine(|engine, store| {
        let t = tenant(&store, "acme", Plan::Enterprise);
        let a_old = registered(&store, &t.id, "wa", "replica-a");
        let a_new = register(&store, "wa", "replica-b");
        let b = registered(&store, &t.id, "wb", "replica-a");
        let batch = vec![
            ("wa".to_owned(), a_old, beat(1.0)),
            ("wb".to_owned(), b, beat(2.0)),
            ("gone".to_owned(), 1, beat(3.0)),
        ];
        let mut refused = store.record_heartbeats(&batch).unwrap();
        refused.sort();
        assert_eq!(refused, ["gone", "wa"], "{engine:?}");
        assert!(store.heartbeat("wa").unwrap().is_none(), "{engine:?}");
        assert_eq!(store.heartbeat("wb").unwrap().unwrap().cpu_usage, 2.0);
        let batch = vec![("wa".to_owned(), a_new, beat(4.0))];
        assert!(store.record_heartbeats(&batch).unwrap().is_empty());
        assert_eq!(store.heartbeat("wa").unwrap().unwrap().cpu_usage, 4.0);
    });
}
