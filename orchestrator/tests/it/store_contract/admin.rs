//! Policies, history and people on both engines: policy versions,
//! activation and rollback; removed containers pruned after the plan's
//! retention; organisations, members and their tokens.

use orchestrator::policy::Role as PolicyRole;
use orchestrator::store::{
    ContainerRecord, ContainerState, Member, MemberChange, MemberToken, Org, Plan, PolicyRecord,
    Role, StoreError,
};

use super::{each_engine, tenant};

fn policy(id: &str, name: &str) -> PolicyRecord {
    PolicyRecord {
        id: id.into(),
        scope: "global".into(),
        tenant_id: None,
        name: name.into(),
        kind: "policy".into(),
        version: 0,
        size_bytes: 3,
        sha256: format!("sha-{id}"),
        uploaded_at: 1,
    }
}

#[test]
fn policies_upload_activate_roll_back_and_list() {
    each_engine(|engine, store| {
        let v1 = store.put_policy(policy("p1", "limits"), b"one").unwrap();
        let v2 = store.put_policy(policy("p2", "limits"), b"two").unwrap();
        let other = store.put_policy(policy("p3", "other"), b"three").unwrap();
        assert_eq!(
            (v1.version, v2.version, other.version),
            (1, 2, 1),
            "{engine:?}"
        );
        assert_eq!(
            store.policy_module("p2").unwrap().as_deref(),
            Some(&b"two"[..])
        );
        assert_eq!(
            store.get_policy("p1").unwrap(),
            Some(v1.clone()),
            "{engine:?}"
        );
        assert_eq!(store.list_policies().unwrap().len(), 3, "{engine:?}");

        store
            .activate_policy("p1", &[PolicyRole::Admission], "closed", 10)
            .unwrap();
        let slots = store
            .activate_policy("p2", &[PolicyRole::Admission], "lastGood", 20)
            .unwrap();
        assert_eq!(slots[0].current.policy_id, "p2", "{engine:?}");
        assert_eq!(slots[0].previous.len(), 1, "{engine:?}");
        let active = store.active_policies().unwrap();
        assert_eq!(active.len(), 1, "{engine:?}");
        assert_eq!(active[0].current.fail_mode, "lastGood", "{engine:?}");

        let back = store.rollback_policy("p2", 30).unwrap();
        assert_eq!(back.len(), 1, "{engine:?}");
        let slot = back[0].active.as_ref().expect("p1 active again");
        assert_eq!(slot.current.policy_id, "p1", "{engine:?}");
        let back = store.rollback_policy("p1", 40).unwrap();
        assert!(
            back[0].active.is_none(),
            "{engine:?}: back to the stock default"
        );
        assert!(store.active_policies().unwrap().is_empty(), "{engine:?}");
        assert!(
            store.rollback_policy("p1", 50).unwrap().is_empty(),
            "{engine:?}"
        );
    });
}

#[test]
fn the_policy_cache_secret_is_stored_once() {
    each_engine(|engine, store| {
        let first = store.policy_cache_secret(b"first").unwrap();
        let second = store.policy_cache_secret(b"second").unwrap();
        assert_eq!(
            (first.as_slice(), second.as_slice()),
            (&b"first"[..], &b"first"[..]),
            "{engine:?}"
        );
    });
}

#[test]
fn removed_containers_are_pruned_after_the_plans_retention_only() {
    each_engine(|engine, store| {
        let t = tenant(&store, "acme", Plan::Free);
        let day = 24 * 3600 * 1000;
        for (id, state, updated_at) in [
            ("old", ContainerState::Removed, 1_000),
            ("recent", ContainerState::Removed, 1_000 + day),
            ("running", ContainerState::Running, 1_000),
        ] {
            let rec = ContainerRecord {
                id: id.into(),
                tenant_id: t.id.clone(),
                worker_id: "w1".into(),
                name: id.into(),
                image: "busybox".into(),
                profile: "standard".into(),
                state,
                engine_id: None,
                created_at: 1_000,
                updated_at,
                last_error: None,
                allowed_domains: Vec::new(),
                rev: 0,
            };
            store.create_container(&rec).unwrap();
        }
        let pruned = store.prune_history(1_000 + day + 1).unwrap();
        let ids: Vec<_> = pruned.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["old"], "{engine:?}");
        let left: Vec<_> = store
            .list_containers(&t.id)
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(left, ["recent", "running"], "{engine:?}");
        assert!(
            store.prune_history(1_000 + day + 1).unwrap().is_empty(),
            "{engine:?}"
        );
    });
}

#[test]
fn orgs_members_and_their_tokens() {
    each_engine(|engine, store| {
        let default = store.ensure_default_org("org-default", 1).unwrap();
        assert_eq!(
            store.ensure_default_org("org-other", 2).unwrap(),
            default,
            "{engine:?}"
        );
        assert_eq!(store.default_org_id().unwrap(), default.id, "{engine:?}");
        let org = Org {
            id: "org-1".into(),
            name: "acme".into(),
            created_at: 3,
        };
        store.create_org(&org).unwrap();
        let dup = Org {
            id: "org-2".into(),
            ..org.clone()
        };
        let err = store.create_org(&dup).unwrap_err();
        assert!(
            matches!(err, StoreError::NameTaken { .. }),
            "{engine:?}: {err}"
        );
        assert_eq!(store.list_orgs().unwrap().len(), 2, "{engine:?}");

        let member = Member {
            id: "m1".into(),
            org_id: org.id.clone(),
            name: "ann".into(),
            role: Role::Member,
            tenants: vec![],
            created_at: 4,
        };
        store.create_member(&member).unwrap();
        let promoted = store
            .update_member("m1", MemberChange::Role(Role::Admin))
            .unwrap();
        assert_eq!(promoted.role, Role::Admin, "{engine:?}");
        assert_eq!(store.list_members(&org.id).unwrap().len(), 1, "{engine:?}");

        let token = MemberToken {
            id: "tok1".into(),
            member_id: "m1".into(),
            name: "laptop".into(),
            hash: "hash-1".into(),
            created_at: 5,
            revoked_at: None,
        };
        store.create_member_token(&token).unwrap();
        let (found, token_id) = store.member_by_token("hash-1").unwrap().unwrap();
        assert_eq!(
            (found.id.as_str(), token_id.as_str()),
            ("m1", "tok1"),
            "{engine:?}"
        );
        assert_eq!(
            store.list_member_tokens("m1").unwrap().len(),
            1,
            "{engine:?}"
        );

        store.delete_member("m1", 6).unwrap();
        assert!(
            store.member_by_token("hash-1").unwrap().is_none(),
            "{engine:?}"
        );
        let revoked = store.get_member_token("tok1").unwrap().unwrap();
        assert!(revoked.revoked_at.is_some(), "{engine:?}");
    });
}
