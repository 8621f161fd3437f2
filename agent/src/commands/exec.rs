//! Exec and image handlers: `container.exec` (to completion, output capped,
//! timeout killing the command inside the container), the background trio,
//! `images.list` and `images.build` (progress events, then the result).

use std::collections::VecDeque;
use std::os::unix::fs::DirBuilderExt;
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncReadExt, FutureExt};
use protocol::exec::*;
use protocol::image::{BuildProgress, ImageBuild, ImageBuilt, ImageListing};
use protocol::validate as v;
use protocol::{Body, Envelope};
use smol::channel::Sender;

use super::{check_reserved_env, invalid, CommandError, Executor};
use crate::podman::container::{build_args, exec_args, ExecSpec};
use crate::podman::env::plan_env;
use crate::podman::process::{kill_marked, new_mark, EXEC_MARK};
use crate::podman::{Call, PodmanError};

const DEFAULT_EXEC_SECS: u32 = 60;
/// How long a build may take.
const BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Longest build output line sent as one progress event.
const LINE_MAX: usize = 4096;
/// Build output lines kept for the error message of a failed build.
const TAIL_LINES: usize = 20;
/// At most one `images.build.progress` event per this interval; lines in
/// between travel together, newline-separated.
const PROGRESS_PACE: Duration = Duration::from_millis(100);
/// At most this many lines in one progress event.
const PROGRESS_MAX_LINES: usize = 256;

impl Executor {
    pub(super) async fn exec(&self, req: Exec) -> Result<Body, CommandError> {
        const TY: &str = "container.exec";
        req.validate().map_err(invalid(TY))?;
        check_reserved_env(TY, &req.env)?;
        let engine_id = self.resolve(TY, &req.container_id).await?;
        let mark = new_mark();
        let env = plan_env(&req.env, &[(EXEC_MARK, mark.clone())])
            .map_err(|source| CommandError::Env { ty: TY, source })?;
        let spec = ExecSpec {
            engine_id: &engine_id,
            command: &req.command,
            workdir: req.workdir.as_deref(),
        };
        let timeout = Duration::from_secs(u64::from(req.timeout_secs.unwrap_or(DEFAULT_EXEC_SECS)));
        let mut call = Call::new(exec_args(&spec, &env), timeout);
        call.env = env.agent_env.clone();
        call.cap = EXEC_OUTPUT_CAP;
        let out = self
            .podman
            .run(call)
            .await
            .map_err(|source| CommandError::Engine { ty: TY, source })?;
        if out.timed_out {
            let n = smol::unblock(move || kill_marked(&mark)).await;
            tracing::info!(
                timeout_secs = timeout.as_secs(),
                processes = n,
                "exec timed out; killed"
            );
        }
        // Podman's own failures (125, or 255 for a stopped container) end with
        // a line starting "Error: "; the command's exit codes pass through.
        if matches!(out.code, Some(125 | 255)) {
            let tail = crate::podman::tail(&out.stderr);
            let podman_error = tail
                .lines()
                .last()
                .is_some_and(|l| l.starts_with("Error: "));
            let err = PodmanError::Failed {
                verb: "exec".into(),
                status: out.status.clone(),
                stderr: tail,
            };
            if podman_error && (err.is_no_such_container() || err.is_state_conflict()) {
                return Err(self.engine_error(TY, &req.container_id, err));
            }
        }
        Ok(Body::ExecDone(ExecResult {
            exit_code: if out.timed_out { None } else { out.code },
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            stdout_truncated: out.stdout_truncated,
            stderr_truncated: out.stderr_truncated,
            timed_out: out.timed_out,
        }))
    }

    pub(super) async fn exec_background(&self, req: ExecBackground) -> Result<Body, CommandError> {
        const TY: &str = "container.exec.background";
        req.validate().map_err(invalid(TY))?;
        check_reserved_env(TY, &req.env)?;
        let engine_id = self.resolve(TY, &req.container_id).await?;
        let handle = self
            .background
            .start(&self.podman, &engine_id, &req)
            .await
            .map_err(|source| CommandError::Background { ty: TY, source })?;
        tracing::info!(container_id = %req.container_id, %handle, "background command started");
        Ok(Body::BackgroundStarted(BackgroundStarted { handle }))
    }

    pub(super) fn capture(&self, req: BackgroundCapture) -> Result<Body, CommandError> {
        const TY: &str = "container.exec.background.capture";
        v::id("containerId", &req.container_id).map_err(invalid(TY))?;
        let out = self
            .background
            .capture(&req.container_id, &req.handle, req.offset)
            .map_err(|source| CommandError::Background { ty: TY, source })?;
        Ok(Body::BackgroundOutput(out))
    }

    pub(super) async fn kill(&self, req: BackgroundKill) -> Result<Body, CommandError> {
        const TY: &str = "container.exec.background.kill";
        v::id("containerId", &req.container_id).map_err(invalid(TY))?;
        let killed = self
            .background
            .kill(&req.container_id, &req.handle)
            .await
            .map_err(|source| CommandError::Background { ty: TY, source })?;
        Ok(Body::BackgroundKilled(BackgroundKilled { killed }))
    }

    pub(super) async fn images(&self) -> Result<Body, CommandError> {
        let images = self
            .podman
            .images()
            .await
            .map_err(|source| CommandError::Engine {
                ty: "images.list",
                source,
            })?;
        Ok(Body::ImagesListed(ImageListing { images }))
    }

    /// Write the Containerfile into a fresh private directory with an empty
    /// context beside it, run `podman build`, stream each output line as an
    /// `images.build.progress` event, then answer with the image id.
    pub(super) async fn build(
        &self,
        request_id: &str,
        req: ImageBuild,
        events: &Sender<Envelope>,
    ) -> Result<Body, CommandError> {
        const TY: &str = "images.build";
        req.validate().map_err(invalid(TY))?;
        let dir = std::env::temp_dir().join(format!("crops-build-{}", new_mark()));
        let _cleanup = RemoveOnDrop(dir.clone());
        let io = |source: std::io::Error| CommandError::Engine {
            ty: TY,
            source: PodmanError::Unexpected {
                verb: "build".into(),
                detail: format!("preparing {}: {source}", dir.display()),
            },
        };
        let file = dir.join("Containerfile");
        let context = dir.join("context");
        let iidfile = dir.join("iid");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(io)?;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&context)
            .map_err(io)?;
        std::fs::write(&file, req.containerfile.as_bytes()).map_err(io)?;
        let args = build_args(
            &req.tag,
            &file.display().to_string(),
            &context.display().to_string(),
            &iidfile.display().to_string(),
            req.tenant_id.as_deref(),
        );
        let engine = |source| CommandError::Engine { ty: TY, source };
        let mut streaming = self
            .podman
            .spawn_streaming(args, Vec::new(), true)
            .await
            .map_err(engine)?;
        let (lines_tx, lines_rx) = smol::channel::bounded::<String>(64);
        let readers = futures_lite::future::zip(
            read_lines(streaming.child.stdout.take(), lines_tx.clone()),
            read_lines(streaming.child.stderr.take(), lines_tx),
        );
        let mut tail = VecDeque::with_capacity(TAIL_LINES);
        let forward = async {
            // Lines are batched into at most one event per PROGRESS_PACE, so
            // a chatty build stays far below the orchestrator's message rate.
            let mut last_sent: Option<std::time::Instant> = None;
            while let Ok(first) = lines_rx.recv().await {
                let mut batch = vec![first];
                let wait = last_sent.map_or(Duration::ZERO, |t| {
                    PROGRESS_PACE.saturating_sub(t.elapsed())
                });
                let gather = async {
                    while let Ok(line) = lines_rx.recv().await {
                        batch.push(line);
                        if batch.len() >= PROGRESS_MAX_LINES {
                            break;
                        }
                    }
                };
                gather
                    .or(async {
                        smol::Timer::after(wait).await;
                    })
                    .await;
                for line in &batch {
                    if tail.len() == TAIL_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(line.clone());
                }
                let line = batch.join("\n");
                let event =
                    Envelope::request(request_id, Body::BuildProgress(BuildProgress { line }));
                // Nobody listening (a dropped connection) does not stop the build.
                let _ = events.send(event).await;
                last_sent = Some(std::time::Instant::now());
            }
        };
        let finished = async {
            futures_lite::future::zip(readers, forward).await;
            Some(streaming.child.status().await)
        }
        .or(async {
            smol::Timer::after(BUILD_TIMEOUT).await;
            None
        })
        .await;
        let status = match finished {
            None => {
                let _ = streaming.child.kill();
                return Err(engine(PodmanError::Timeout {
                    verb: "build".into(),
                    timeout: BUILD_TIMEOUT,
                }));
            }
            Some(Err(e)) => return Err(io(e)),
            Some(Ok(status)) => status,
        };
        if !status.success() {
            let stderr = Vec::from(tail).join("\n");
            return Err(engine(PodmanError::Failed {
                verb: "build".into(),
                status: status.to_string(),
                stderr,
            }));
        }
        let image_id = std::fs::read_to_string(&iidfile).map_err(io)?;
        let image_id = image_id.trim();
        let image_id = image_id
            .strip_prefix("sha256:")
            .unwrap_or(image_id)
            .to_owned();
        tracing::info!(tag = %req.tag, %image_id, "image built");
        Ok(Body::ImageBuilt(ImageBuilt {
            image_id,
            tag: req.tag,
        }))
    }
}

/// Removes a directory tree when dropped.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Split a pipe into lines (lossy UTF-8, at most [`LINE_MAX`] bytes each;
/// longer ones are cut) and send them until the pipe closes.
async fn read_lines(r: Option<impl AsyncRead + Unpin>, tx: Sender<String>) {
    let Some(mut r) = r else { return };
    let mut line: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 8192];
    let send = |bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes)
            .trim_end_matches('\r')
            .to_owned();
        tx.try_send(text).err()
    };
    loop {
        let n = match r.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &chunk[..n] {
            if b == b'\n' {
                if let Some(smol::channel::TrySendError::Full(text)) = send(&line) {
                    let _ = tx.send(text).await;
                }
                line.clear();
            } else if line.len() < LINE_MAX {
                line.push(b);
            }
        }
    }
    if !line.is_empty() {
        let _ = tx.send(String::from_utf8_lossy(&line).into_owned()).await;
    }
}
