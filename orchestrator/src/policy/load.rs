//! Whether the stored activations are in the registry yet.
//!
//! The orchestrator listens before it loads them (compiling or reading
//! from the cache a large module takes time, and `/healthz` and the rest
//! of the API need not wait). Until they are loaded, `/readyz` answers
//! 503 and no decision is made: the stock default must never stand in
//! for an operator's module just because that module is still loading.
//! The API waits for the load, up to [`WAIT`], before a decision or a
//! change of activations; past that it answers 503 `not_ready`. A load
//! that failed (the store could not be read) keeps every decision failing
//! closed with its error.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use futures_lite::FutureExt;

use super::PolicyError;

/// How long a decision or an activation waits for the load before it is
/// refused (a restart takes under two seconds with the cache warm; a
/// first start after an engine upgrade compiles every active module).
pub const WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Loading,
    Loaded,
    Failed(String),
}

/// The load's state, and a channel closed when it ends (every waiter
/// wakes up at once).
#[derive(Debug)]
pub(super) struct Load {
    state: Mutex<State>,
    done: Mutex<Option<smol::channel::Sender<()>>>,
    ended: smol::channel::Receiver<()>,
}

impl Default for Load {
    /// Nothing to load: loaded.
    fn default() -> Self {
        let (tx, ended) = smol::channel::bounded(1);
        drop(tx);
        Self {
            state: Mutex::new(State::Loaded),
            done: Mutex::new(None),
            ended,
        }
    }
}

impl Load {
    /// Loading from now on, until [`Load::finish`].
    pub(super) fn loading() -> Self {
        let (tx, ended) = smol::channel::bounded(1);
        Self {
            state: Mutex::new(State::Loading),
            done: Mutex::new(Some(tx)),
            ended,
        }
    }

    /// The load ended: `Ok` loaded, `Err` failed with that reason.
    pub(super) fn finish(&self, result: Result<(), String>) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = match result {
            Ok(()) => State::Loaded,
            Err(e) => State::Failed(e),
        };
        // Dropping the sender closes the channel: every waiter returns.
        drop(
            self.done
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
    }

    /// `Ok` once loaded; the reason no decision can be made otherwise.
    pub(super) fn check(&self) -> Result<(), PolicyError> {
        match &*self.state.lock().unwrap_or_else(PoisonError::into_inner) {
            State::Loaded => Ok(()),
            State::Loading => Err(PolicyError::NotLoaded(
                "the stored policy activations are still loading (the orchestrator is starting); retry shortly"
                    .into(),
            )),
            State::Failed(e) => Err(PolicyError::NotLoaded(format!(
                "the stored policy activations could not be loaded: {e}"
            ))),
        }
    }

    /// [`Load::check`] once the load ended, or after `bound`.
    pub(super) async fn wait(&self, bound: Duration) -> Result<(), PolicyError> {
        if self.check().is_ok() {
            return Ok(());
        }
        async {
            // Err once closed: the load ended.
            let _ = self.ended.recv().await;
        }
        .or(async {
            smol::Timer::after(bound).await;
        })
        .await;
        self.check()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_wake_when_the_load_ends_and_time_out_while_it_does_not() {
        smol::block_on(async {
            assert!(Load::default().wait(Duration::ZERO).await.is_ok());
            let load = std::sync::Arc::new(Load::loading());
            let err = load.wait(Duration::from_millis(10)).await.unwrap_err();
            assert_eq!(err.code(), "not_loaded");
            assert!(err.to_string().contains("still loading"), "{err}");
            let waiter = {
                let load = std::sync::Arc::clone(&load);
                smol::spawn(async move { load.wait(Duration::from_secs(600)).await })
            };
            load.finish(Ok(()));
            assert!(waiter.await.is_ok());

            let failed = Load::loading();
            failed.finish(Err("disk on fire".into()));
            let err = failed.wait(Duration::from_secs(600)).await.unwrap_err();
            assert!(err.to_string().contains("disk on fire"), "{err}");
        });
    }
}
