//! The PostgreSQL engine's refusals at start: an unreachable server, a
//! malformed URL, a missing database, a schema newer than this binary. Each
//! a clear error naming what is wrong, with nothing written; and replicas
//! starting together on a fresh database migrate it once.

use orchestrator::store::Store;

use super::race;
use crate::postgres::{database, name_of, server};

fn refusal(url: &str) -> String {
    match Store::connect(url, 2) {
        Ok(_) => panic!("{url} was accepted"),
        Err(e) => {
            // The whole chain, as `main` prints it with anyhow's {:#}.
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        }
    }
}

#[test]
fn an_unreachable_server_is_a_clear_error_without_the_password() {
    let nowhere = std::env::temp_dir().join(format!("crops-pg-nowhere-{}", std::process::id()));
    std::fs::create_dir_all(&nowhere).unwrap();
    let url = format!(
        "postgres://crops:hunter2@localhost/crops?host={}",
        nowhere.display()
    );
    let message = refusal(&url);
    assert!(message.contains("cannot reach PostgreSQL"), "{message}");
    assert!(
        message.contains(&nowhere.display().to_string()),
        "{message}"
    );
    assert!(
        !message.contains("hunter2"),
        "the password leaked: {message}"
    );
    let _ = std::fs::remove_dir_all(&nowhere);
}

#[test]
fn a_malformed_url_is_a_clear_error() {
    for url in ["not a url", "postgres://crops@localhost:port/db"] {
        let message = refusal(url);
        assert!(
            message.contains("is not a PostgreSQL URL"),
            "{url}: {message}"
        );
        assert!(message.contains(url), "{url}: {message}");
    }
}

#[test]
fn a_missing_database_is_a_clear_error() {
    let url = server().url("no_such_database");
    let message = refusal(&url);
    assert!(message.contains("cannot reach PostgreSQL"), "{message}");
    assert!(message.contains("no_such_database"), "{message}");
    assert!(message.contains("does not exist"), "{message}");
}

#[test]
fn a_database_with_a_newer_schema_is_refused_and_left_untouched() {
    let url = database();
    let db = name_of(&url);
    server().psql(
        db,
        "CREATE TABLE crops_schema (version bigint NOT NULL); \
         INSERT INTO crops_schema VALUES (1), (2), (999)",
    );
    let message = refusal(&url);
    assert!(message.contains("schema version 999"), "{message}");
    assert!(message.contains("upgrade the orchestrator"), "{message}");
    let relations = server().psql(
        db,
        "SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class \
         WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace",
    );
    assert_eq!(relations.trim(), "crops_schema", "something was created");
    let versions = server().psql(
        db,
        "SELECT string_agg(version::text, ',' ORDER BY version) FROM crops_schema",
    );
    assert_eq!(versions.trim(), "1,2,999");
}

#[test]
fn a_newer_schema_over_existing_data_changes_none_of_it() {
    let url = database();
    let db = name_of(&url);
    let store = Store::connect(&url, 2).unwrap();
    store.set_admin_token_hash("abc").unwrap();
    drop(store);
    let before = server().psql(db, "SELECT count(*), md5(string_agg(tbl || key || encode(value, 'hex'), '' ORDER BY tbl, key)) FROM crops_kv");
    server().psql(db, "INSERT INTO crops_schema VALUES (1000)");
    let message = refusal(&url);
    assert!(message.contains("schema version 1000"), "{message}");
    let after = server().psql(db, "SELECT count(*), md5(string_agg(tbl || key || encode(value, 'hex'), '' ORDER BY tbl, key)) FROM crops_kv");
    assert_eq!(before, after);
}

#[test]
fn replicas_starting_together_migrate_a_fresh_database_once() {
    let url = database();
    let stores = race(6, |_| Store::connect(&url, 2));
    for s in &stores {
        assert!(s.is_ok(), "{:?}", s.as_ref().err().map(ToString::to_string));
    }
    let versions = server().psql(
        name_of(&url),
        "SELECT count(*) = count(DISTINCT version) AND count(*) > 0 FROM crops_schema",
    );
    assert_eq!(versions.trim(), "t", "a schema version was applied twice");
    let stores: Vec<_> = stores.into_iter().map(Result::unwrap).collect();
    stores[0].set_admin_token_hash("abc").unwrap();
    assert_eq!(
        stores[5].admin_token_hash().unwrap().as_deref(),
        Some("abc")
    );
}

/// A probe opens a connection of its own: it fails while the server is
/// down and succeeds again when it is back (a busy pool never fails it).
#[test]
fn a_probe_tells_a_server_that_is_down_from_one_that_answers() {
    let pg = crate::postgres::Own::start("probe");
    let store = Store::connect(&pg.database(), 1).unwrap();
    store.probe().unwrap();
    pg.pg_stop();
    let down = store.probe().unwrap_err();
    assert!(down.is_unavailable(), "{down}");
    pg.pg_start();
    store.probe().unwrap();
}
