//! Terminal handlers: `terminal.open` (a managed, running container; the
//! command defaults to [`DEFAULT_COMMAND`]; the PTY runs inside the
//! container when it has the helper, see [`crate::terminal`]), `terminal.resize`,
//! `terminal.close` and, for callers other than a connection (whose session
//! loop answers it itself, ahead of the replayed output),
//! `terminal.attach`. The sessions themselves live in [`crate::terminal`].

use protocol::container::{ContainerState, Empty};
use protocol::terminal::*;
use protocol::{Body, Envelope};
use smol::channel::Sender;

use super::{invalid, not_found, CommandError, Executor};
use crate::terminal::{Way, DEFAULT_COMMAND};

impl Executor {
    /// Open a session whose output streams to the link of `origin` (the
    /// outbox this command's reply goes to), once the reply is queued.
    pub(super) async fn terminal_open(
        &self,
        req: TerminalOpen,
        origin: &Sender<Envelope>,
    ) -> Result<Body, CommandError> {
        const TY: &str = "terminal.open";
        req.validate().map_err(invalid(TY))?;
        let (info, helper) = self
            .podman
            .find_with_helper(&req.container_id)
            .await
            .map_err(|source| CommandError::Engine { ty: TY, source })?
            .ok_or_else(|| not_found(TY, &req.container_id))?;
        self.remember(&req.container_id, &info.engine_id);
        if info.state != ContainerState::Running {
            return Err(CommandError::Conflict {
                ty: TY,
                reason: format!(
                    "container {} is not running (state {:?})",
                    req.container_id, info.state
                ),
            });
        }
        let argv: Vec<String> = match req.command {
            Some(cmd) if !cmd.is_empty() => cmd,
            _ => DEFAULT_COMMAND.iter().map(|s| (*s).to_owned()).collect(),
        };
        // Containers created with the PTY helper mounted run their PTY
        // inside; others (older, or made by a dynamically linked agent) get
        // `podman exec -it` on a host PTY.
        let way = if helper { Way::Helper } else { Way::HostPty };
        let session_id = self
            .terminals
            .open(
                &req.container_id,
                &info.engine_id,
                way,
                &argv,
                (req.cols, req.rows),
                origin,
            )
            .await
            .map_err(|source| CommandError::Terminal { ty: TY, source })?;
        Ok(Body::TerminalOpened(TerminalOpened { session_id }))
    }

    pub(super) fn terminal_resize(&self, req: TerminalResize) -> Result<Body, CommandError> {
        const TY: &str = "terminal.resize";
        req.validate().map_err(invalid(TY))?;
        self.terminals
            .resize(req.session_id, req.cols, req.rows)
            .map_err(|source| CommandError::Terminal { ty: TY, source })?;
        Ok(Body::TerminalResized(Empty {}))
    }

    pub(super) fn terminal_close(&self, req: TerminalClose) -> Result<Body, CommandError> {
        const TY: &str = "terminal.close";
        self.terminals
            .close(req.session_id)
            .map_err(|source| CommandError::Terminal { ty: TY, source })?;
        Ok(Body::TerminalClosed(Empty {}))
    }

    pub(super) fn terminal_attach(
        &self,
        req: TerminalAttach,
        origin: &Sender<Envelope>,
    ) -> Result<Body, CommandError> {
        const TY: &str = "terminal.attach";
        let attached = self
            .terminals
            .attach(&req, origin)
            .map_err(|source| CommandError::Terminal { ty: TY, source })?;
        Ok(Body::TerminalAttached(attached))
    }

    /// `terminal.attach` from a connection: its reply, to be written before
    /// anything else so that it precedes the replayed output.
    pub fn attach_reply(
        &self,
        request_id: String,
        req: TerminalAttach,
        origin: &Sender<Envelope>,
    ) -> Envelope {
        match self.terminal_attach(req, origin) {
            Ok(body) => Envelope::request(request_id, body),
            Err(e) => {
                tracing::info!(code = %e.code(), error = %e, "terminal.attach refused");
                Envelope::error(Some(request_id), e.to_reply())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use protocol::ErrorCode;

    use crate::commands::Executor;
    use crate::podman::{Podman, RecordingRunner};
    use protocol::container::Profile;
    use protocol::terminal::*;
    use protocol::Body;

    fn executor(answers: Vec<crate::podman::RunOutput>) -> (Executor, Arc<RecordingRunner>) {
        let runner = Arc::new(RecordingRunner::new(answers));
        let dir = std::env::temp_dir().join(format!("crops-term-unit-{}", fastrand::u64(..)));
        let ex = Executor::new(
            Podman::with_runner("podman", runner.clone()),
            &dir,
            Profile::Open,
        );
        (ex, runner)
    }

    fn code(reply: Body) -> ErrorCode {
        match reply {
            Body::Error(e) => e.code,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn open_refuses_bad_sizes_unknown_and_stopped_containers() {
        smol::block_on(async {
            let open = |cols| {
                Body::TerminalOpen(TerminalOpen {
                    container_id: "c-1".into(),
                    cols,
                    rows: 24,
                    command: None,
                })
            };
            let (ex, runner) = executor(vec![
                RecordingRunner::ok("[]"),
                RecordingRunner::ok(
                    r#"[{"Id":"e1","Names":["c-1"],"Image":"i","State":"exited","Labels":{"crops.managed":"true","crops.container-id":"c-1","crops.tenant":"t"}}]"#,
                ),
            ]);
            assert_eq!(code(ex.call(open(0)).await), ErrorCode::InvalidArgument);
            assert!(runner.calls().is_empty(), "refused before podman runs");
            assert_eq!(code(ex.call(open(80)).await), ErrorCode::NotFound);
            assert_eq!(code(ex.call(open(80)).await), ErrorCode::Conflict);
        });
    }

    #[test]
    fn unknown_sessions_are_not_found() {
        smol::block_on(async {
            let (ex, _) = executor(vec![]);
            let resize = Body::TerminalResize(TerminalResize {
                session_id: 7,
                cols: 80,
                rows: 24,
            });
            assert_eq!(code(ex.call(resize).await), ErrorCode::NotFound);
            let close = Body::TerminalClose(TerminalClose { session_id: 7 });
            assert_eq!(code(ex.call(close).await), ErrorCode::NotFound);
            let attach = Body::TerminalAttach(TerminalAttach {
                session_id: 7,
                offset: 0,
            });
            assert_eq!(code(ex.call(attach).await), ErrorCode::NotFound);
        });
    }
}
