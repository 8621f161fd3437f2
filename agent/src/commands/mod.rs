//! Commands from the orchestrator: each one gets exactly one reply, its
//! `<command>.result` or an `error`, carrying the command's `requestId`.
//! Today `container.list-all` and `images.list` run for real; the rest of the
//! container command set answers `unsupported` until it lands here.

use protocol::container::ContainerListing;
use protocol::image::ImageListing;
use protocol::{Body, Envelope, ErrorCode, ErrorReply};
use smol::channel::Sender;
use tracing::Instrument;

use crate::podman::{Podman, PodmanError};

/// Why a command failed, before it becomes an `error` reply.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{ty}: container commands arrive in a later version of crops-agent")]
    Unsupported { ty: &'static str },
    #[error("{ty}: {source}")]
    Engine {
        ty: &'static str,
        #[source]
        source: PodmanError,
    },
}

impl CommandError {
    /// The wire error this failure becomes.
    pub fn to_reply(&self) -> ErrorReply {
        let code = match self {
            Self::Unsupported { .. } => ErrorCode::Unsupported,
            Self::Engine {
                source: PodmanError::Timeout { .. },
                ..
            } => ErrorCode::Timeout,
            Self::Engine { .. } => ErrorCode::EngineFailed,
        };
        ErrorReply::new(code, self.to_string())
    }
}

/// Run one command in its own task and send its one reply into `out`.
/// Detached: a command in flight finishes even if its connection drops (the
/// reply is then lost; the orchestrator retries by `requestId`).
pub fn spawn(podman: Podman, request_id: String, body: Body, out: Sender<Envelope>) {
    smol::spawn(async move {
        let reply = handle(&podman, request_id, body).await;
        let _ = out.send(reply).await;
    })
    .detach();
}

/// Run one command and build its one reply.
pub async fn handle(podman: &Podman, request_id: String, body: Body) -> Envelope {
    let ty = body.type_name();
    let span = tracing::info_span!("command", %ty, request_id = %request_id);
    match execute(podman, body).instrument(span.clone()).await {
        Ok(reply) => {
            span.in_scope(|| tracing::debug!("command done"));
            Envelope::request(request_id, reply)
        }
        Err(e) => {
            span.in_scope(|| match &e {
                CommandError::Unsupported { .. } => tracing::info!("unsupported command"),
                CommandError::Engine { .. } => tracing::warn!(error = %e, "command failed"),
            });
            Envelope::error(Some(request_id), e.to_reply())
        }
    }
}

async fn execute(podman: &Podman, body: Body) -> Result<Body, CommandError> {
    let ty = body.type_name();
    let engine = |source| CommandError::Engine { ty, source };
    match body {
        Body::ContainerListAll(_) => {
            let containers = podman.list_all().await.map_err(engine)?;
            Ok(Body::ContainerListedAll(ContainerListing { containers }))
        }
        Body::ImagesList(_) => {
            let images = podman.images().await.map_err(engine)?;
            Ok(Body::ImagesListed(ImageListing { images }))
        }
        _ => Err(CommandError::Unsupported { ty }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::podman::{RecordingRunner, RunOutput};
    use protocol::container::{ContainerStop, Empty};
    use std::sync::Arc;

    fn podman(answers: Vec<RunOutput>) -> Podman {
        Podman::with_runner("podman", Arc::new(RecordingRunner::new(answers)))
    }

    #[test]
    fn list_all_replies_with_its_result_type_and_request_id() {
        smol::block_on(async {
            let p = podman(vec![RecordingRunner::ok("[]")]);
            let reply = handle(&p, "r1".into(), Body::ContainerListAll(Empty {})).await;
            assert_eq!(
                reply,
                Envelope::request(
                    "r1",
                    Body::ContainerListedAll(ContainerListing { containers: vec![] })
                )
            );
        });
    }

    #[test]
    fn images_list_replies_with_images() {
        smol::block_on(async {
            let p = podman(vec![RecordingRunner::ok(
                r#"[{"Id":"i1","Names":["a:b"],"Size":3}]"#,
            )]);
            let reply = handle(&p, "r2".into(), Body::ImagesList(Empty {})).await;
            let Body::ImagesListed(listing) = reply.body else {
                panic!("unexpected {reply:?}")
            };
            assert_eq!(listing.images[0].id, "i1");
            assert_eq!(reply.request_id.as_deref(), Some("r2"));
        });
    }

    #[test]
    fn other_commands_are_unsupported_for_now() {
        smol::block_on(async {
            let p = podman(vec![]);
            let stop = Body::ContainerStop(ContainerStop {
                container_id: "c".into(),
                timeout_secs: None,
            });
            let reply = handle(&p, "r3".into(), stop).await;
            let Body::Error(err) = &reply.body else {
                panic!("unexpected {reply:?}")
            };
            assert_eq!(err.code, ErrorCode::Unsupported);
            assert!(
                err.message.starts_with("container.stop: "),
                "{}",
                err.message
            );
            assert_eq!(reply.request_id.as_deref(), Some("r3"));
        });
    }

    #[test]
    fn engine_failures_become_engine_failed() {
        smol::block_on(async {
            let p = podman(vec![RunOutput {
                success: false,
                status: "exit status: 125".into(),
                stdout: vec![],
                stderr: b"Error: storage is broken".to_vec(),
            }]);
            let reply = handle(&p, "r4".into(), Body::ImagesList(Empty {})).await;
            let Body::Error(err) = &reply.body else {
                panic!("unexpected {reply:?}")
            };
            assert_eq!(err.code, ErrorCode::EngineFailed);
            assert!(err.message.contains("storage is broken"), "{}", err.message);
        });
    }
}
