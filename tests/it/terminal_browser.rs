//! The terminal page end to end in real headless chromium: the real
//! orchestrator serving /ui/terminal over TLS, the static agent, a running
//! busybox container on real Podman, and `tests/browser/terminal-e2e.js`
//! driving Debian's chromium through playwright-core, as a tenant member.
//!
//! The node script and this test talk in lines: node prints `step: …`,
//! a signal such as `READY_TO_KILL` that this side acts on (then answers
//! `KILLED` on node's stdin), and finally `PASS` or `FAIL: …`.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::browser::Browser;
use crate::fleet::*;
use crate::harness::*;
use crate::term::member_token;

/// A fleet with one running busybox container and a member's token.
fn running_container(name: &str) -> (Fleet, String, String) {
    let f = Fleet::start(name);
    let id = f.running(&format!("e2e-{name}-{}", std::process::id()), json!({}));
    let token = member_token(&f);
    (f, id, token)
}

fn podman_exec(engine: &str, argv: &[&str]) -> bool {
    Command::new("podman")
        .arg("exec")
        .arg(engine)
        .args(argv)
        .env("CONTAINERS_CONF", containers_conf())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn the_page_types_resizes_reloads_and_never_answers_queries() {
    let (f, id, token) = running_container("term-page");
    Browser::start(
        "terminal-e2e.js",
        "basics",
        &f,
        &[("CROPS_CONTAINER", &id), ("CROPS_TOKEN", &token)],
    )
    .run(|_| None);
}

#[test]
fn an_invite_link_joins_the_same_shell_and_a_wrong_token_keeps_the_saved_one() {
    let (f, id, token) = running_container("term-share");
    Browser::start(
        "terminal-e2e.js",
        "share",
        &f,
        &[("CROPS_CONTAINER", &id), ("CROPS_TOKEN", &token)],
    )
    .run(|_| None);
}

#[test]
fn the_page_reconnects_to_the_same_shell_after_the_orchestrator_is_killed() {
    let (mut f, id, token) = running_container("term-restart");
    let engine = f.podman_ids(&id).remove(0);
    Browser::start(
        "terminal-e2e.js",
        "restart",
        &f,
        &[("CROPS_CONTAINER", &id), ("CROPS_TOKEN", &token)],
    )
    .run(|signal| match signal {
        "READY_TO_KILL" => {
            f.orch.kill9();
            // The shell's background job prints only now, with no orchestrator.
            assert!(podman_exec(&engine, &["touch", "/tmp/go"]), "touch /tmp/go");
            wait_until(
                "the job's output while the orchestrator is down",
                Duration::from_secs(30),
                || podman_exec(&engine, &["test", "-e", "/tmp/later-done"]).then_some(()),
            );
            Some("KILLED")
        }
        // The page was typed a command while nothing served it.
        "TYPED" => {
            f.orch.spawn();
            Some("RESTARTED")
        }
        _ => None,
    });
}
