//! How a stop request reaches the agent: a [`Shutdown`] every loop can wait
//! on, triggered by SIGTERM/SIGINT ([`Shutdown::on_signals`]) or by a test
//! dropping its [`ShutdownTrigger`].

use async_signal::{Signal, Signals};
use futures_lite::StreamExt;
use smol::channel::{Receiver, Sender};

/// Why signal handling could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ShutdownError {
    #[error("installing SIGTERM/SIGINT handlers: {0}")]
    Signals(#[source] std::io::Error),
}

/// Fires [`Shutdown`] when [`trigger`](Self::trigger)ed or dropped.
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: Sender<()>,
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        self.tx.close();
    }
}

impl Drop for ShutdownTrigger {
    fn drop(&mut self) {
        self.tx.close();
    }
}

/// A stop request, observed by the run loop, the session and the backoff wait.
/// Clones observe the same request.
#[derive(Debug, Clone)]
pub struct Shutdown {
    /// Never carries a message: it is closed to signal shutdown.
    rx: Receiver<()>,
}

impl Shutdown {
    /// A shutdown that fires when the returned trigger fires or is dropped.
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = smol::channel::bounded(1);
        (ShutdownTrigger { tx }, Shutdown { rx })
    }

    /// A shutdown that never fires.
    pub fn never() -> Shutdown {
        let (trigger, shutdown) = Self::new();
        std::mem::forget(trigger);
        shutdown
    }

    /// A shutdown fired by the first SIGTERM or SIGINT. The handlers are
    /// installed before this returns; a detached task waits for the signal.
    pub fn on_signals() -> Result<Shutdown, ShutdownError> {
        let mut signals =
            Signals::new([Signal::Term, Signal::Int]).map_err(ShutdownError::Signals)?;
        let (trigger, shutdown) = Self::new();
        smol::spawn(async move {
            match signals.next().await {
                Some(Ok(signal)) => tracing::info!(?signal, "signal received; shutting down"),
                Some(Err(e)) => tracing::warn!(error = %e, "signal stream failed; shutting down"),
                None => {}
            }
            trigger.trigger();
        })
        .detach();
        Ok(shutdown)
    }

    /// Resolves once shutdown was requested. Cancel-safe.
    pub async fn wait(&self) {
        // No message is ever sent: this returns when the channel is closed.
        let _ = self.rx.recv().await;
    }

    /// Whether shutdown was already requested.
    pub fn is_requested(&self) -> bool {
        self.rx.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_and_drop_both_fire_every_clone() {
        smol::block_on(async {
            let (trigger, shutdown) = Shutdown::new();
            let other = shutdown.clone();
            assert!(!shutdown.is_requested());
            trigger.trigger();
            shutdown.wait().await;
            other.wait().await;
            let (trigger, shutdown) = Shutdown::new();
            drop(trigger);
            shutdown.wait().await;
            assert!(shutdown.is_requested());
        });
    }

    #[test]
    fn never_does_not_fire() {
        assert!(!Shutdown::never().is_requested());
    }
}
