//! The size rule of PROTOCOL.md section 2, on the agent's side: a message
//! over 4 MiB (`MAX_TEXT_FRAME`) from the orchestrator is answered with a
//! close frame 1009, as the orchestrator answers one from an agent, and the
//! agent reconnects; a binary message within 4 MiB whose payload is over
//! 64 KiB only gets `error{too_large}` and the connection stays.

use async_tungstenite::tungstenite::Message;
use futures_lite::StreamExt;
use protocol::{Body, ErrorCode};

use super::{accept_ws, fast_settings, listen, register_and_accept, send, wait_for, within};

#[test]
fn a_message_over_four_mib_is_closed_with_1009_and_the_agent_reconnects() {
    smol::block_on(within(30, "a 1009 close and a reconnect", async {
        let (listener, port) = listen().await;
        let (trigger, shutdown) = agent::Shutdown::new();
        let agent = smol::spawn(agent::run(fast_settings(port), shutdown));
        let (mut ws, _) = accept_ws(&listener).await;
        register_and_accept(&mut ws, 10).await;
        wait_for(&mut ws, |e| matches!(e.body, Body::Inventory(_))).await;

        // An output frame's header and 4 MiB of payload: one byte too many.
        let mut big = vec![1u8; protocol::MAX_TEXT_FRAME + 1];
        big[1..17].fill(0);
        ws.send(Message::binary(big)).await.unwrap();
        let close = loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => break frame,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        };
        let close = close.expect("a close frame with a code");
        assert_eq!(u16::from(close.code), 1009, "{}", close.reason);
        drop(ws);

        // The agent dials again and registers.
        let (mut again, _) = accept_ws(&listener).await;
        register_and_accept(&mut again, 10).await;
        trigger.trigger();
        drop(again);
        agent.await.unwrap();
    }));
}

#[test]
fn a_binary_payload_over_64_kib_gets_too_large_and_the_connection_stays() {
    smol::block_on(within(30, "a too_large error", async {
        let (listener, port) = listen().await;
        let (trigger, shutdown) = agent::Shutdown::new();
        let agent = smol::spawn(agent::run(fast_settings(port), shutdown));
        let (mut ws, _) = accept_ws(&listener).await;
        register_and_accept(&mut ws, 10).await;

        // Terminal input (kind 2) with a payload one byte over the limit.
        let mut frame = vec![0u8; protocol::frame::HEADER_LEN + protocol::MAX_BINARY_PAYLOAD + 1];
        frame[0] = 2;
        ws.send(Message::binary(frame)).await.unwrap();
        let reply = wait_for(&mut ws, |e| matches!(e.body, Body::Error(_))).await;
        let Body::Error(err) = reply.body else {
            unreachable!()
        };
        assert_eq!(err.code, ErrorCode::TooLarge, "{}", err.message);
        assert_eq!(reply.request_id, None);

        // Still the same connection: it answers the next message.
        send(
            &mut ws,
            r#"{"type":"container.frobnicate","requestId":"still-1","data":{}}"#,
        )
        .await;
        let reply = wait_for(&mut ws, |e| e.request_id.as_deref() == Some("still-1")).await;
        assert!(
            matches!(&reply.body, Body::Error(e) if e.code == ErrorCode::UnknownType),
            "{reply:?}"
        );
        trigger.trigger();
        drop(ws);
        agent.await.unwrap();
    }));
}
