//! The agent's half-open detection against the in-test orchestrator of
//! `main.rs`: it follows the heartbeat interval `worker.accepted` dictates
//! (two intervals of silence), keeps a quiet orchestrator that answers its
//! pings, and survives a close frame.

use std::time::Duration;

use futures_lite::{FutureExt, StreamExt};
use protocol::Body;

use crate::{
    accept_ws, captured_logs, fast_settings, listen, next_envelope, register_and_accept, within,
};
use agent::{Shutdown, Timing};

/// Half-open detection follows the heartbeat interval `worker.accepted`
/// dictates (1 s here; the agent's own clocks are the product's defaults):
/// an orchestrator that falls silent (no reads, so no pongs; no pings) is
/// dropped after two intervals and dialled again; one that only answers
/// pings keeps the connection; a close frame is survived too.
#[test]
fn a_silent_orchestrator_is_dropped_within_two_heartbeats_and_a_close_frame_is_survived() {
    let capture = captured_logs();
    smol::block_on(within(90, "reconnections", async {
        let (listener, port) = listen().await;
        let (trigger, shutdown) = Shutdown::new();
        let settings = fast_settings(port);
        assert_eq!(settings.timing, Timing::default());
        let agent = smol::spawn(agent::run(settings, shutdown));

        // First connection: accept with a 1 s heartbeat, then fall silent.
        let (mut first, _) = accept_ws(&listener).await;
        register_and_accept(&mut first, 1).await;
        let silent_since = std::time::Instant::now();
        // The agent gives up on it and dials again: within two intervals,
        // plus its backoff and the Podman facts it gathers before dialling
        // (a generous bound: 45 s before the liveness followed the interval).
        let (mut second, _) = accept_ws(&listener).await;
        let took = silent_since.elapsed();
        assert!(
            took < Duration::from_secs(15),
            "a silent connection was dropped only after {took:?}"
        );
        let url = format!("url=ws://127.0.0.1:{port}/v1/agent");
        let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        assert!(
            logs.lines()
                .any(|l| l.contains(&url)
                    && l.contains("nothing heard from the orchestrator for 2s")),
            "the half-open reason names two intervals:\n{logs}"
        );
        drop(first);

        // Second connection: live but quiet. Reading answers the agent's
        // pings; nothing else is sent for five intervals, and the agent stays.
        register_and_accept(&mut second, 1).await;
        enum Seen {
            Redial,
            Quiet,
            Broke(String),
        }
        let seen = {
            let read = async {
                loop {
                    match second.next().await {
                        Some(Ok(_)) => continue,
                        other => return Seen::Broke(format!("{other:?}")),
                    }
                }
            };
            let redial = async {
                let _ = listener.accept().await;
                Seen::Redial
            };
            let quiet = async {
                smol::Timer::after(Duration::from_secs(5)).await;
                Seen::Quiet
            };
            read.or(redial).or(quiet).await
        };
        match seen {
            Seen::Quiet => {}
            Seen::Redial => panic!("the agent dropped an orchestrator that answered its pings"),
            Seen::Broke(what) => panic!("the connection broke: {what}"),
        }

        // Then close it as revoked; the agent dials a third time.
        let frame = async_tungstenite::tungstenite::protocol::CloseFrame {
            code: protocol::close::REVOKED.into(),
            reason: "credential revoked".into(),
        };
        second.close(Some(frame)).await.unwrap();
        let (mut third, _) = accept_ws(&listener).await;
        let env = next_envelope(&mut third).await;
        assert!(matches!(env.body, Body::Register(_)), "{env:?}");

        trigger.trigger();
        agent.await.unwrap();
    }));
}
