//! Background commands (`container.exec.background`): a `podman exec` child
//! the agent keeps, its stdout and stderr interleaved into a bounded ring
//! buffer addressed by byte offsets, read with `…capture` and ended with
//! `…kill`. Jobs outlive the connection that started them (they belong to the
//! agent process), so a capture after a reconnect still works.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use futures_lite::{AsyncRead, AsyncReadExt};
use protocol::exec::{BackgroundOutput, ExecBackground};

use crate::podman::container::{exec_args, ExecSpec};
use crate::podman::env::{plan_env, EnvError};
use crate::podman::process::{kill_marked, new_mark, EXEC_MARK};
use crate::podman::{Podman, PodmanError};

/// Bytes of output kept per job; older bytes are dropped (and `firstOffset` moves).
pub const RING_CAP: usize = 1024 * 1024;
/// Bytes returned by one capture at most (the reply must fit one message).
pub const CAPTURE_MAX: usize = 512 * 1024;
/// Jobs kept at once; finished ones are forgotten oldest first beyond this.
const MAX_JOBS: usize = 128;

/// Why a background operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BackgroundError {
    #[error("no background command {handle} in container {container_id}")]
    NotFound {
        container_id: String,
        handle: String,
    },
    #[error("{MAX_JOBS} background commands are running on this worker; kill one first")]
    TooMany,
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error(transparent)]
    Spawn(#[from] PodmanError),
}

/// Output bytes `[first, first + buf.len())` of one job.
#[derive(Debug, Default)]
struct Ring {
    buf: VecDeque<u8>,
    /// Offset of `buf[0]` in the job's whole output.
    first: u64,
}

impl Ring {
    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend(bytes);
        let excess = self.buf.len().saturating_sub(RING_CAP);
        if excess > 0 {
            self.buf.drain(..excess);
            self.first += excess as u64;
        }
    }

    fn end(&self) -> u64 {
        self.first + self.buf.len() as u64
    }

    /// Bytes from `offset` (clamped into the kept window), at most [`CAPTURE_MAX`].
    fn read(&self, offset: u64) -> (Vec<u8>, u64) {
        let start = offset.clamp(self.first, self.end());
        let skip = usize::try_from(start - self.first).unwrap_or(usize::MAX);
        let bytes: Vec<u8> = self
            .buf
            .iter()
            .skip(skip)
            .take(CAPTURE_MAX)
            .copied()
            .collect();
        let next = start + bytes.len() as u64;
        (bytes, next)
    }
}

#[derive(Debug, Default)]
struct JobState {
    ring: Ring,
    running: bool,
    exit_code: Option<i32>,
}

#[derive(Debug)]
struct Job {
    container_id: String,
    /// The `CROPS_EXEC_MARK` value of its processes.
    mark: String,
    /// Written by the job's reader task; read by capture.
    state: Mutex<JobState>,
    /// Order of creation, for eviction.
    seq: u64,
}

/// Every background job of this agent, by handle.
#[derive(Debug, Default)]
pub struct Background {
    /// Written by `start` (insert, evict) ; read by capture and kill.
    jobs: Mutex<HashMap<String, Arc<Job>>>,
    seq: std::sync::atomic::AtomicU64,
}

impl Background {
    /// Start `req.command` in `engine_id`; returns its handle at once.
    pub async fn start(
        &self,
        podman: &Podman,
        engine_id: &str,
        req: &ExecBackground,
    ) -> Result<String, BackgroundError> {
        self.make_room()?;
        let mark = new_mark();
        let env = plan_env(&req.env, &[(EXEC_MARK, mark.clone())])?;
        let spec = ExecSpec {
            engine_id,
            command: &req.command,
            workdir: req.workdir.as_deref(),
        };
        let mut streaming = podman
            .spawn_streaming(exec_args(&spec, &env), env.agent_env.clone(), false)
            .await?;
        let handle = format!("bg-{}", &mark[..16]);
        let job = Arc::new(Job {
            container_id: req.container_id.clone(),
            mark,
            state: Mutex::new(JobState {
                running: true,
                ..JobState::default()
            }),
            seq: self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        });
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.insert(handle.clone(), job.clone());
        }
        let (stdout, stderr) = (streaming.child.stdout.take(), streaming.child.stderr.take());
        let span = tracing::info_span!("background", %handle);
        smol::spawn(async move {
            // Holds the env file until podman has exited.
            let _env = env;
            futures_lite::future::zip(pump(stdout, &job), pump(stderr, &job)).await;
            let status = streaming.child.status().await;
            let code = status.as_ref().ok().and_then(|s| s.code());
            let _g = span.enter();
            tracing::info!(exit_code = ?code, "background command ended");
            if let Ok(mut st) = job.state.lock() {
                st.running = false;
                st.exit_code = code;
            }
        })
        .detach();
        Ok(handle)
    }

    fn job(&self, container_id: &str, handle: &str) -> Result<Arc<Job>, BackgroundError> {
        self.jobs
            .lock()
            .ok()
            .and_then(|jobs| jobs.get(handle).cloned())
            .filter(|j| j.container_id == container_id)
            .ok_or_else(|| BackgroundError::NotFound {
                container_id: container_id.to_owned(),
                handle: handle.to_owned(),
            })
    }

    /// Output from `offset` on (see [`BackgroundOutput`]).
    pub fn capture(
        &self,
        container_id: &str,
        handle: &str,
        offset: u64,
    ) -> Result<BackgroundOutput, BackgroundError> {
        let job = self.job(container_id, handle)?;
        let st = job.state.lock().map_err(|_| BackgroundError::NotFound {
            container_id: container_id.to_owned(),
            handle: handle.to_owned(),
        })?;
        let (bytes, next_offset) = st.ring.read(offset);
        Ok(BackgroundOutput {
            output: String::from_utf8_lossy(&bytes).into_owned(),
            next_offset,
            first_offset: st.ring.first,
            running: st.running,
            exit_code: st.exit_code,
        })
    }

    /// SIGKILL the job's processes (inside the container too). `false` when
    /// it had already ended.
    pub async fn kill(&self, container_id: &str, handle: &str) -> Result<bool, BackgroundError> {
        let job = self.job(container_id, handle)?;
        let running = job.state.lock().map(|s| s.running).unwrap_or(false);
        if !running {
            return Ok(false);
        }
        let mark = job.mark.clone();
        let n = smol::unblock(move || kill_marked(&mark)).await;
        tracing::info!(%handle, processes = n, "background command killed");
        Ok(true)
    }

    /// Forget the oldest finished jobs beyond [`MAX_JOBS`]; refuse a new one
    /// when all are still running.
    fn make_room(&self) -> Result<(), BackgroundError> {
        let Ok(mut jobs) = self.jobs.lock() else {
            return Ok(());
        };
        while jobs.len() >= MAX_JOBS {
            let oldest_done = jobs
                .iter()
                .filter(|(_, j)| j.state.lock().map(|s| !s.running).unwrap_or(true))
                .min_by_key(|(_, j)| j.seq)
                .map(|(h, _)| h.clone());
            match oldest_done {
                Some(h) => {
                    jobs.remove(&h);
                }
                None => return Err(BackgroundError::TooMany),
            }
        }
        Ok(())
    }
}

/// Copy one pipe into the job's ring until it closes.
async fn pump(r: Option<impl AsyncRead + Unpin>, job: &Job) {
    let Some(mut r) = r else { return };
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if let Ok(mut st) = job.state.lock() {
                    st.ring.push(&chunk[..n]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_bytes_with_their_offsets() {
        let mut r = Ring::default();
        r.push(b"hello ");
        r.push(b"world");
        assert_eq!(r.read(0), (b"hello world".to_vec(), 11));
        assert_eq!(r.read(6), (b"world".to_vec(), 11));
        assert_eq!(
            r.read(99),
            (Vec::new(), 11),
            "past the end: nothing, at the end"
        );
        r.push(&vec![b'x'; RING_CAP]);
        assert_eq!(r.first, 11);
        assert_eq!(r.end(), 11 + RING_CAP as u64);
        let (bytes, next) = r.read(0);
        assert_eq!(bytes.len(), CAPTURE_MAX, "one capture is bounded");
        assert_eq!(next, 11 + CAPTURE_MAX as u64, "clamped to firstOffset");
    }
}
