//! A connection's terminal side: the agent's output frames handed to the
//! terminal relay (answered with an ack frame when one is due, with no
//! queue in between), the input and ack frames the relay queues on the
//! connection's terminal lane (opened in the hub when a session first
//! needs it), and `terminal.open.result` and `terminal.exited` handed over.
//! The hub tells the relay when the connection ends.
//!
//! Output is flow-controlled by acks (PROTOCOL.md section 5), not by the
//! text rate limit: a frame costs a copy into the session's mirror and a
//! wake-up of its viewers, never a wait on a viewer.

use async_tungstenite::tungstenite::Message;
use protocol::terminal::TerminalExited;
use protocol::{close, Body, ErrorCode, ErrorReply, Frame, FrameError, FrameKind};

use super::session::{close_with, Conn, End};
use crate::hub::LaneMsg;

impl Conn {
    /// A binary message from the agent: output goes to the terminal relay
    /// (and its ack, when due, straight back); anything else is refused.
    pub(super) async fn on_binary(&mut self, bytes: &[u8]) -> Result<(), End> {
        if self.registered.is_none() {
            let error = ErrorReply::new(
                ErrorCode::NotRegistered,
                "binary frame before worker.register",
            );
            self.reply_error(None, error).await?;
            return Err(close_with(
                close::PROTOCOL_ERROR,
                "message before worker.register",
            ));
        }
        match Frame::decode(bytes) {
            Ok(frame) if frame.kind == FrameKind::TerminalOutput => {
                let ack = self
                    .app
                    .terminals
                    .on_output(&self.worker_id, self.conn_id, &frame);
                match ack {
                    Some(ack) => self.send(Message::Binary(ack.into())).await,
                    None => Ok(()),
                }
            }
            Ok(frame) => {
                let message = format!(
                    "binary frame of kind {:?} is not one an agent sends",
                    frame.kind
                );
                self.reply_error(None, ErrorReply::new(ErrorCode::MalformedMessage, message))
                    .await
            }
            Err(error) => {
                let code = match error {
                    FrameError::TooLarge { .. } => ErrorCode::TooLarge,
                    FrameError::Short(_) | FrameError::UnknownKind(_) => {
                        ErrorCode::MalformedMessage
                    }
                };
                self.reply_error(None, ErrorReply::new(code, error.to_string()))
                    .await
            }
        }
    }

    /// Send what the terminal relay queued for this connection.
    pub(super) async fn on_link(&mut self, msg: LaneMsg) -> Result<(), End> {
        let frames = self
            .app
            .terminals
            .on_link_msg(&self.worker_id, self.conn_id, msg);
        for bytes in frames {
            self.send(Message::Binary(bytes.into())).await?;
        }
        Ok(())
    }

    /// A reply about to be delivered: a `terminal.open.result` registers
    /// its session first, so the output right behind it has somewhere to
    /// go before its caller has even woken up.
    pub(super) fn terminal_reply(&self, request_id: Option<&str>, body: &Body) {
        let (Body::TerminalOpened(opened), Some(id)) = (body, request_id) else {
            return;
        };
        if self.app.hub.is_pending(&self.worker_id, id) {
            self.app
                .terminals
                .on_opened(&self.worker_id, self.conn_id, opened.session_id);
        }
    }

    /// `terminal.exited`: the relay ends the session.
    pub(super) fn on_terminal_exited(&self, exited: TerminalExited) {
        crate::terminal::on_exited(&self.app, &self.worker_id, exited);
    }
}
