//! The store's policy slots: per scope and role, rollback per slot, a
//! restart, and entries stored before roles.

use super::*;

fn store(name: &str) -> (Store, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("crops-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    (Store::open(&dir).expect("open"), dir)
}

/// Upload `name` (of `kind`) to `scope`; its id.
fn upload(store: &Store, scope: &str, name: &str, kind: &str) -> String {
    let record = PolicyRecord {
        id: format!("{scope}-{name}"),
        scope: scope.into(),
        tenant_id: scope.strip_prefix("tenant:").map(str::to_owned),
        name: name.into(),
        kind: kind.into(),
        version: 0,
        size_bytes: 1,
        sha256: String::new(),
        uploaded_at: 0,
    };
    store.put_policy(record, b"x").expect("put").id
}

fn entry(id: &str) -> ActiveEntry {
    ActiveEntry {
        policy_id: id.into(),
        fail_mode: "closed".into(),
    }
}

/// `(role, current, previous)` of every slot of `scope`.
fn slots(store: &Store, scope: &str) -> Vec<(Role, String, Vec<String>)> {
    let ids = |es: &[ActiveEntry]| es.iter().map(|e| e.policy_id.clone()).collect();
    store
        .active_policies()
        .expect("list")
        .into_iter()
        .filter(|a| a.scope == scope)
        .map(|a| (a.role, a.current.policy_id.clone(), ids(&a.previous)))
        .collect()
}

const BOTH: [Role; 2] = [Role::Admission, Role::Placement];

#[test]
fn each_role_has_its_slot_and_history_and_a_restart_keeps_them() {
    let (store, dir) = store("policy-slots");
    let t = "tenant:t1";
    let (adm, place, both) = (
        upload(&store, t, "limits", "admission"),
        upload(&store, t, "bp", "placement"),
        upload(&store, t, "both", "admission"),
    );
    store
        .activate_policy(&adm, &[Role::Admission], "closed", 1)
        .unwrap();
    let placed = store.activate_policy(&place, &[Role::Placement], "lastGood", 2);
    assert_eq!(placed.unwrap()[0].current.fail_mode, "lastGood");
    assert_eq!(
        slots(&store, t),
        [
            (Role::Admission, adm.clone(), vec![]),
            (Role::Placement, place.clone(), vec![])
        ]
    );
    // A module implementing both worlds takes both slots ...
    assert_eq!(
        store
            .activate_policy(&both, &BOTH, "closed", 3)
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        slots(&store, t),
        [
            (Role::Admission, both.clone(), vec![adm.clone()]),
            (Role::Placement, both.clone(), vec![place.clone()])
        ]
    );
    // ... and its rollback restores each slot's previous entry.
    let back = store.rollback_policy(&both, 4).unwrap();
    let restored: Vec<_> = back
        .iter()
        .map(|r| {
            (
                r.role,
                r.active.as_ref().map(|a| a.current.policy_id.clone()),
            )
        })
        .collect();
    assert_eq!(
        restored,
        [
            (Role::Admission, Some(adm.clone())),
            (Role::Placement, Some(place.clone()))
        ]
    );
    assert!(store.rollback_policy(&both, 5).unwrap().is_empty());
    // Rolling back one role leaves the other alone.
    let back = store.rollback_policy(&place, 6).unwrap();
    assert_eq!(
        back,
        [RolledBack {
            role: Role::Placement,
            active: None
        }]
    );
    let expected = [(Role::Admission, adm.clone(), vec![])];
    assert_eq!(slots(&store, t), expected);
    drop(store);
    let store = Store::open(&dir).expect("reopen");
    assert_eq!(slots(&store, t), expected);
    assert!(store.legacy_active().unwrap().is_empty());
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_entry_stored_before_roles_becomes_one_slot_per_role_its_module_implements() {
    let (store, dir) = store("policy-legacy");
    let (adm, place, both) = (
        upload(&store, "global", "limits", "admission"),
        upload(&store, "global", "bp", "placement"),
        upload(&store, "global", "both", "admission"),
    );
    let tenant_place = upload(&store, "tenant:t2", "bp", "placement");
    // Written as the code before roles wrote it: key = the bare scope.
    let old = |scope: &str, current: &str, previous: &[&str]| {
        let previous: Vec<_> = previous.iter().map(|p| entry(p)).collect();
        let value = serde_json::json!({
            "scope": scope, "current": entry(current),
            "previous": previous, "activatedAt": 7,
        });
        (scope.to_owned(), value.to_string())
    };
    let txn = store
        .db
        .begin_write(crate::store::engine::Durability::Immediate, false)
        .unwrap();
    {
        let mut table = txn.open_table(POLICY_ACTIVE).unwrap();
        for (k, v) in [
            old("global", &both, &[&adm, &place]),
            old("tenant:t2", &tenant_place, &[]),
        ] {
            table.insert(k.as_str(), v.as_str()).unwrap();
        }
    }
    txn.commit().unwrap();
    assert!(store.active_policies().unwrap().is_empty());
    let legacy = store.legacy_active().unwrap();
    assert_eq!(legacy.len(), 2);
    assert_eq!(legacy[0].current, entry(&both));

    let roles_of = |id: &str| -> Vec<Role> {
        match id {
            i if i == both => BOTH.to_vec(),
            i if i.ends_with("limits") => vec![Role::Admission],
            _ => vec![Role::Placement],
        }
    };
    let written = store.upgrade_active("global", roles_of).unwrap();
    assert_eq!(written.len(), 2);
    assert_eq!(written[0].activated_at, 7);
    // Rolling back `both` before the upgrade gave `bp` to the whole
    // scope: placement goes back to it, admission to the stock default.
    assert_eq!(
        slots(&store, "global"),
        [
            (Role::Admission, both.clone(), vec![]),
            (Role::Placement, both.clone(), vec![place.clone()])
        ]
    );
    store.upgrade_active("tenant:t2", roles_of).unwrap();
    assert_eq!(
        slots(&store, "tenant:t2"),
        [(Role::Placement, tenant_place.clone(), vec![])]
    );
    assert!(store.legacy_active().unwrap().is_empty());
    assert!(store.upgrade_active("global", roles_of).unwrap().is_empty());
    let back = store.rollback_policy(&both, 8).unwrap();
    assert_eq!(back.len(), 2);
    assert_eq!(
        back[0],
        RolledBack {
            role: Role::Admission,
            active: None
        }
    );
    assert_eq!(slots(&store, "global")[0].1, place);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
