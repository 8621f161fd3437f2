//! Whether a worker is online, reconnecting or offline, as the API reports it.
//!
//! The hub is in-memory, so right after an orchestrator (re)start no worker
//! is connected. Reporting them all `offline` would make the orchestrator's
//! own outage look like the fleet dying; instead, a worker that had
//! registered before this start is `reconnecting` until the offline grace
//! ([`DEFAULT_OFFLINE_GRACE`], `ServeConfig::offline_grace`) has passed
//! since the start without it coming back, and `offline` after that. The
//! grace covers the agents' reconnect backoff: a cap of 30 s with ±20 %
//! jitter is at most 36 s, plus one default heartbeat interval (10 s).
//!
//! Otherwise: `online` while its socket is registered and its last sign of
//! life is younger than three heartbeat intervals; `offline` when revoked
//! or deleted, never registered, silent, or disconnected after the start.

use std::time::Duration;

use crate::store::{HeartbeatRecord, Worker};
use crate::App;

/// How long after a start a worker known before it may take to reconnect.
pub const DEFAULT_OFFLINE_GRACE: Duration = Duration::from_secs(46);

/// A worker's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Online,
    /// Known before this orchestrator started, not back yet, within the grace.
    Reconnecting,
    Offline,
}

impl Presence {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Reconnecting => "reconnecting",
            Self::Offline => "offline",
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What [`classify`] decides from, all times in Unix ms.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Facts {
    pub revoked: bool,
    /// The last sign of life of the live connection, if there is one.
    pub live_beat_ms: Option<u64>,
    /// When the worker last registered, if ever.
    pub connected_at: Option<u64>,
    pub started_ms: u64,
    pub offline_grace: Duration,
    pub offline_after: Duration,
    /// The last beat of the replica that owns the worker, when that
    /// replica has stopped beating (it died or was cut off): its agents
    /// are on their way to the others.
    pub owner_gone_ms: Option<u64>,
}

/// The status these facts mean at `now_ms`.
pub(crate) fn classify(f: Facts, now_ms: u64) -> Presence {
    if f.revoked {
        return Presence::Offline;
    }
    if let Some(beat) = f.live_beat_ms {
        if now_ms.saturating_sub(beat) < ms(f.offline_after) {
            return Presence::Online;
        }
        // Silent because the replica holding it stopped: the same grace
        // as this orchestrator's own restart.
        let gone = f
            .owner_gone_ms
            .is_some_and(|gone| now_ms < gone.saturating_add(ms(f.offline_grace)));
        return if gone {
            Presence::Reconnecting
        } else {
            Presence::Offline
        };
    }
    let known_before_start = f.connected_at.is_some_and(|c| c < f.started_ms);
    let within_grace = now_ms < f.started_ms.saturating_add(ms(f.offline_grace));
    if known_before_start && within_grace {
        Presence::Reconnecting
    } else {
        Presence::Offline
    }
}

/// Whether a command for `worker` can be sent now: its agent is connected
/// here, or to another replica (which relays it, `peer`) and online by
/// what that replica stored. The owner in a worker's record outlives its
/// connection, so it alone says nothing.
pub(crate) async fn reachable(app: &App, worker: &Worker) -> bool {
    if app.hub.live(&worker.id).is_some() {
        return true;
    }
    if !owned_elsewhere(app, worker) {
        return false;
    }
    let id = worker.id.clone();
    let beat = app.store.read_now(move |s| s.heartbeat(&id)).await;
    let beat = beat.ok().flatten();
    presence(app, worker, beat.as_ref(), crate::now_ms()) == Presence::Online
}

/// Whether the worker's newest connection registered on another replica
/// of a shared store. (On the embedded store the owner is always this
/// process or an earlier run of it, whose connections died with it.)
fn owned_elsewhere(app: &App, worker: &Worker) -> bool {
    app.store.is_shared()
        && worker
            .owner
            .as_ref()
            .is_some_and(|o| o.replica != app.replica_id)
}

/// The status of `worker` at `now_ms` (Unix ms), `beat` its stored
/// heartbeat. A worker whose agent is connected to another replica of a
/// shared store counts as live by what that replica stored: its register
/// and its heartbeats (stored in batches, at most `heartbeats::FLUSH`
/// late).
pub(crate) fn presence(
    app: &App,
    worker: &Worker,
    beat: Option<&HeartbeatRecord>,
    now_ms: u64,
) -> Presence {
    let mut owner_gone_ms = None;
    let live_beat_ms = match app.hub.live(&worker.id) {
        Some(live) => Some(live.last_beat_ms),
        None if owned_elsewhere(app, worker) => {
            owner_gone_ms = worker
                .owner
                .as_ref()
                .and_then(|o| app.replicas.gone_since(&o.replica, now_ms));
            worker.connected_at.max(beat.map(|b| b.at))
        }
        None => None,
    };
    let facts = Facts {
        revoked: worker.revoked,
        live_beat_ms,
        connected_at: worker.connected_at,
        started_ms: app.started_ms,
        offline_grace: app.offline_grace,
        offline_after: app.offline_after(),
        owner_gone_ms,
    };
    classify(facts, now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: u64 = 1_000_000;

    fn facts() -> Facts {
        Facts {
            revoked: false,
            live_beat_ms: None,
            connected_at: Some(START - 60_000),
            started_ms: START,
            offline_grace: Duration::from_secs(46),
            offline_after: Duration::from_secs(30),
            owner_gone_ms: None,
        }
    }

    #[test]
    fn a_worker_whose_replica_stopped_is_reconnecting_within_the_grace() {
        // Registered on another replica long after this one started; its
        // last beat is 40 s old, and its replica stopped beating at 50 s.
        let silent = Facts {
            live_beat_ms: Some(START + 10_000),
            connected_at: Some(START + 5_000),
            ..facts()
        };
        let now = START + 50_000;
        assert_eq!(
            classify(silent, now),
            Presence::Offline,
            "its replica lives"
        );
        let gone = Facts {
            owner_gone_ms: Some(START + 45_000),
            ..silent
        };
        assert_eq!(classify(gone, now), Presence::Reconnecting);
        assert_eq!(
            classify(gone, START + 45_000 + 45_999),
            Presence::Reconnecting
        );
        assert_eq!(classify(gone, START + 45_000 + 46_000), Presence::Offline);
    }

    #[test]
    fn a_worker_known_before_the_start_is_reconnecting_within_the_grace() {
        assert_eq!(classify(facts(), START), Presence::Reconnecting);
        assert_eq!(classify(facts(), START + 45_999), Presence::Reconnecting);
        assert_eq!(classify(facts(), START + 46_000), Presence::Offline);
    }

    #[test]
    fn live_revoked_new_and_late_workers() {
        let live = Facts {
            live_beat_ms: Some(START + 10_000),
            ..facts()
        };
        assert_eq!(classify(live, START + 39_999), Presence::Online);
        assert_eq!(classify(live, START + 40_000), Presence::Offline);
        let revoked = Facts {
            revoked: true,
            ..live
        };
        assert_eq!(classify(revoked, START + 1), Presence::Offline);
        let never = Facts {
            connected_at: None,
            ..facts()
        };
        assert_eq!(classify(never, START + 1), Presence::Offline);
        // Registered after this start, then gone: nothing to wait for.
        let since = Facts {
            connected_at: Some(START + 5),
            ..facts()
        };
        assert_eq!(classify(since, START + 10), Presence::Offline);
    }
}
