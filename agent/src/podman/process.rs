//! Real processes: the [`ProcessRunner`] (run to completion with a deadline,
//! stdout and stderr read concurrently and capped, the excess read and
//! dropped so the child never blocks on a full pipe), long-lived streaming
//! children for `exec.background` and `images.build`, the two ways a
//! terminal starts (`podman exec -it` on a host PTY,
//! [`Podman::spawn_terminal`]; `podman exec --preserve-fds=1` of the
//! in-container PTY helper, [`Podman::spawn_terminal_helper`]), and [`kill_marked`],
//! which kills processes exec'd into a container.
//!
//! Why [`kill_marked`]: killing a `podman exec` client does not kill the
//! command it started inside the container (conmon keeps it). Each exec
//! therefore carries a unique `CROPS_EXEC_MARK=<token>` in its environment
//! (passed by name with `--env`, like every value), and on timeout or kill the
//! agent sends SIGKILL to every process whose `/proc/<pid>/environ` holds that
//! exact entry: the client, and the command with its children, seen from the
//! host's PID namespace. This needs the agent to run as the user that owns
//! the containers (root for rootful Podman), which is how it is deployed.

use std::path::Path;
use std::process::Stdio;

use futures_lite::{AsyncRead, AsyncReadExt, FutureExt};
use smol::lock::SemaphoreGuardArc;
use smol::process::{Child, Command};

use super::{Call, Podman, PodmanError, RunFuture, RunOutput, Runner};

/// The environment variable that marks an exec's processes (see module docs).
pub const EXEC_MARK: &str = "CROPS_EXEC_MARK";
/// Never handed to a child: the agent's own credential, should it be in the env.
const SECRET_ENV: &[&str] = &["CROPS_CREDENTIAL"];

/// The real runner: async-process, `kill_on_drop`, raced against a timer.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessRunner;

impl Runner for ProcessRunner {
    fn run<'a>(&'a self, program: &'a Path, call: &'a Call) -> RunFuture<'a> {
        Box::pin(run_capped(program, call))
    }
}

fn command(program: &Path, args: &[String], env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for key in SECRET_ENV {
        cmd.env_remove(key);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

async fn run_capped(program: &Path, call: &Call) -> Result<RunOutput, PodmanError> {
    let verb = call.verb();
    let mut child = command(program, &call.args, &call.env)
        .spawn()
        .map_err(|source| PodmanError::Spawn {
            program: program.to_owned(),
            verb: verb.clone(),
            source,
        })?;
    let (mut out, mut err) = (Capped::new(call.cap), Capped::new(call.cap));
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let finished = {
        let all = async {
            futures_lite::future::zip(out.drain(stdout), err.drain(stderr)).await;
            Some(child.status().await)
        };
        all.or(async {
            smol::Timer::after(call.timeout).await;
            None
        })
        .await
    };
    let status = match finished {
        Some(Ok(status)) => status,
        Some(Err(source)) => {
            return Err(PodmanError::Spawn {
                program: program.to_owned(),
                verb,
                source,
            })
        }
        None => {
            let _ = child.kill();
            let _ = child.status().await;
            return Ok(RunOutput {
                success: false,
                code: None,
                status: "killed after its deadline".into(),
                stdout: out.buf,
                stderr: err.buf,
                stdout_truncated: out.truncated,
                stderr_truncated: err.truncated,
                timed_out: true,
            });
        }
    };
    Ok(RunOutput {
        success: status.success(),
        code: status.code(),
        status: status.to_string(),
        stdout: out.buf,
        stderr: err.buf,
        stdout_truncated: out.truncated,
        stderr_truncated: err.truncated,
        timed_out: false,
    })
}

/// A buffer that keeps the first `cap` bytes of a stream and counts the rest.
struct Capped {
    cap: usize,
    buf: Vec<u8>,
    truncated: bool,
}

impl Capped {
    fn new(cap: usize) -> Self {
        Self {
            cap,
            buf: Vec::new(),
            truncated: false,
        }
    }

    /// Read `r` to its end (or first error), keeping at most `cap` bytes.
    async fn drain(&mut self, r: Option<impl AsyncRead + Unpin>) {
        let Some(mut r) = r else { return };
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            match r.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let room = self.cap.saturating_sub(self.buf.len());
                    let take = n.min(room);
                    self.buf.extend_from_slice(&chunk[..take]);
                    self.truncated |= take < n;
                }
            }
        }
    }
}

/// A podman child whose output the caller streams (background exec, build).
/// Killed when dropped. Holds its lane permit, if any, until dropped.
pub struct Streaming {
    pub child: Child,
    _permit: Option<SemaphoreGuardArc>,
}

impl Podman {
    /// Spawn `podman args…` with stdout and stderr piped for the caller to
    /// read. With `hold_permit`, the child counts against the work lane for
    /// its whole life (a build); without, it does not (a background command,
    /// which may run for hours and must not starve the lane).
    pub async fn spawn_streaming(
        &self,
        args: Vec<String>,
        env: Vec<(String, String)>,
        hold_permit: bool,
    ) -> Result<Streaming, PodmanError> {
        let permit = if hold_permit {
            Some(self.work.acquire_arc().await)
        } else {
            None
        };
        let mut all_env = self.base_env().to_vec();
        all_env.extend(env);
        tracing::debug!(program = %self.program().display(), ?args, "spawning podman");
        let child = command(self.program(), &args, &all_env)
            .spawn()
            .map_err(|source| PodmanError::Spawn {
                program: self.program().to_owned(),
                verb: args.first().cloned().unwrap_or_default(),
                source,
            })?;
        Ok(Streaming {
            child,
            _permit: permit,
        })
    }
}

impl Podman {
    /// The podman client of a terminal, either path: the agent's secrets
    /// removed from its environment, the base environment set, and `mark`
    /// in `CROPS_EXEC_MARK` for `kill_marked`.
    fn terminal_command(&self, mark: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new(self.program());
        for key in SECRET_ENV {
            cmd.env_remove(key);
        }
        for (k, v) in self.base_env() {
            cmd.env(k, v);
        }
        cmd.env(EXEC_MARK, mark);
        cmd
    }

    /// Spawn `podman exec -it -e TERM=xterm-256color --env CROPS_EXEC_MARK --
    /// ENGINE_ID argv…` on a terminal: `slave` becomes the client's stdin,
    /// stdout and stderr and, in a session of its own (`setsid`), its
    /// controlling terminal, so a resize of the master reaches it as SIGWINCH
    /// (which `-t` passes into the container) and hanging up its process group
    /// reaches it. `mark` travels in the environment, named in argv, like
    /// every exec's. Holds no lane permit: a terminal may stay open for hours.
    /// Killed if the returned child is dropped.
    pub fn spawn_terminal(
        &self,
        engine_id: &str,
        argv: &[String],
        mark: &str,
        slave: &std::os::fd::OwnedFd,
    ) -> Result<Child, PodmanError> {
        use std::os::unix::process::CommandExt;
        let spawn_error = |source| PodmanError::Spawn {
            program: self.program().to_owned(),
            verb: "exec".into(),
            source,
        };
        let stdio = || slave.try_clone().map(Stdio::from).map_err(spawn_error);
        let mut cmd = self.terminal_command(mark);
        cmd.args([
            "exec",
            "-it",
            "-e",
            "TERM=xterm-256color",
            "--env",
            EXEC_MARK,
            "--",
        ])
        .arg(engine_id)
        .args(argv);
        // SAFETY: runs in the forked child before exec; setsid and ioctl are
        // async-signal-safe system calls and nothing here allocates.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid()?;
                if nix::libc::ioctl(0, nix::libc::TIOCSCTTY, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        tracing::debug!(program = %self.program().display(), %engine_id, ?argv, "spawning podman exec on a terminal");
        // Stdio after the conversion, which resets it to inherit.
        let mut cmd = Command::from(cmd);
        cmd.stdin(stdio()?)
            .stdout(stdio()?)
            .stderr(stdio()?)
            .kill_on_drop(true);
        cmd.spawn().map_err(spawn_error)
    }
}

impl Podman {
    /// Spawn `podman exec --preserve-fds=1 -e TERM=xterm-256color --env CROPS_EXEC_MARK -- ENGINE_ID
    /// /.crops/crops-pty COLS ROWS -- argv…`: the in-container PTY helper
    /// (the agent's `terminal::helper`) with `handoff` as its fd
    /// [`PRESERVED_FD`] (the socket it hands the PTY master over), no
    /// stdin, and `diag` as the client's stdout and stderr (Podman's own
    /// messages, the helper's). The client runs in a session of its own, so
    /// hanging up its process group reaches it; `mark` travels like every
    /// exec's. Holds no lane permit. Killed if the returned child is dropped.
    pub fn spawn_terminal_helper(
        &self,
        engine_id: &str,
        argv: &[String],
        (cols, rows): (u16, u16),
        mark: &str,
        handoff: std::os::fd::OwnedFd,
        diag: std::os::fd::OwnedFd,
    ) -> Result<Child, PodmanError> {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let spawn_error = |source| PodmanError::Spawn {
            program: self.program().to_owned(),
            verb: "exec".into(),
            source,
        };
        let mut cmd = self.terminal_command(mark);
        cmd.args(helper_exec_args(engine_id, argv, (cols, rows)));
        let from = handoff.as_raw_fd();
        // SAFETY: runs in the forked child before exec (after its stdio is
        // in place); setsid and `place_for_exec` are async-signal-safe
        // system calls and nothing here allocates. `handoff` outlives the
        // spawn.
        unsafe {
            cmd.pre_exec(move || {
                nix::unistd::setsid()?;
                place_for_exec(from)
            });
        }
        tracing::debug!(program = %self.program().display(), %engine_id, ?argv, "spawning podman exec of the PTY helper");
        let err_out = diag.try_clone().map_err(spawn_error)?;
        // Stdio after the conversion, which resets it to inherit.
        let mut cmd = Command::from(cmd);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(diag))
            .stderr(Stdio::from(err_out))
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(spawn_error);
        // The client has its copy: the socket's end is then the client's.
        drop(handoff);
        child
    }
}

/// The descriptor `podman exec --preserve-fds=1` passes on to the command
/// it runs (Podman passes fds 3 onwards).
pub const PRESERVED_FD: std::os::fd::RawFd = 3;

/// In a forked child before exec (`pre_exec`): put `from` at
/// [`PRESERVED_FD`] without close-on-exec, for `podman exec
/// --preserve-fds=1` to pass on. Only system calls, no allocation, so it
/// is safe between fork and exec.
pub fn place_for_exec(from: std::os::fd::RawFd) -> std::io::Result<()> {
    // dup2 leaves the copy without close-on-exec; onto itself it changes
    // nothing, so there the flag is cleared by hand.
    // SAFETY: fcntl and dup2 on descriptor numbers; no memory is touched.
    let done = unsafe {
        if from == PRESERVED_FD {
            nix::libc::fcntl(PRESERVED_FD, nix::libc::F_SETFD, 0)
        } else {
            nix::libc::dup2(from, PRESERVED_FD)
        }
    };
    if done == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The argv (after `podman`) that runs the PTY helper; see
/// [`Podman::spawn_terminal_helper`].
pub fn helper_exec_args(engine_id: &str, argv: &[String], (cols, rows): (u16, u16)) -> Vec<String> {
    let mut a: Vec<String> = [
        "exec",
        "--preserve-fds=1",
        "-e",
        "TERM=xterm-256color",
        "--env",
        EXEC_MARK,
        "--",
        engine_id,
        super::container::PTY_HELPER_PATH,
    ]
    .map(str::to_owned)
    .to_vec();
    a.extend([cols.to_string(), rows.to_string(), "--".to_owned()]);
    a.extend(argv.iter().cloned());
    a
}

/// A fresh random mark for one exec (see the module docs).
pub fn new_mark() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// SIGKILL every process whose environment holds `CROPS_EXEC_MARK=<mark>`.
/// Returns how many were signalled. Processes that vanish meanwhile, or whose
/// environment cannot be read, are skipped.
pub fn kill_marked(mark: &str) -> usize {
    signal_marked(mark, nix::sys::signal::Signal::SIGKILL)
}

/// Send `signal` to every process whose environment holds
/// `CROPS_EXEC_MARK=<mark>` (see [`kill_marked`]); how many were signalled.
pub fn signal_marked(mark: &str, signal: nix::sys::signal::Signal) -> usize {
    let needle = format!("{EXEC_MARK}={mark}");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let me = std::process::id();
    let mut killed = 0;
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid <= 1 || u32::try_from(pid).ok() == Some(me) {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ.split(|&b| b == 0).any(|e| e == needle.as_bytes()) {
            let pid = nix::unistd::Pid::from_raw(pid);
            if nix::sys::signal::kill(pid, signal).is_ok() {
                killed += 1;
            }
        }
    }
    tracing::debug!(killed, %signal, "signalled marked exec processes");
    killed
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_helper_gets_the_hand_off_socket_the_size_and_the_command_after_dashes() {
        let argv = ["sh".to_owned(), "-c".to_owned(), "echo $TERM".to_owned()];
        let args = super::helper_exec_args("abc123", &argv, (132, 43));
        assert_eq!(
            args.join(" "),
            "exec --preserve-fds=1 -e TERM=xterm-256color --env CROPS_EXEC_MARK -- abc123 \
             /.crops/crops-pty 132 43 -- sh -c echo $TERM"
        );
    }
}
