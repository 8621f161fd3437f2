//! The history pruner: a task that deletes `removed` container records once
//! their tenant's plan retention has passed (Free 1 day, Starter 14, Pro 90,
//! Enterprise 365, or a custom plan's `historyDays`), once at start and then
//! every `ServeConfig::history_interval` (an hour by default), until
//! shutdown. The deletion itself is `Store::prune_history`, one
//! transaction; [`prune_once`] takes the clock as an argument so tests pick
//! the moment instead of waiting for it.

use std::sync::Arc;
use std::time::Duration;

use futures_lite::FutureExt;

use crate::store::{Pruned, Store, StoreError};
use crate::App;

/// How often the pruner runs unless configured otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(3600);

/// Prune once at `now_ms`, logging what went; the records deleted.
pub fn prune_once(store: &Store, now_ms: u64) -> Result<Vec<Pruned>, StoreError> {
    let pruned = store.prune_history(now_ms)?;
    for p in &pruned {
        tracing::info!(container_id = %p.id, tenant_id = %p.tenant_id, removed_at = p.removed_at, "removed container pruned from history");
    }
    tracing::debug!(pruned = pruned.len(), "history pruned");
    Ok(pruned)
}

/// Run the pruner on the serve lifecycle: now, then every `interval`.
pub(crate) fn spawn(app: &Arc<App>, interval: Duration) {
    let store = Arc::clone(&app.store);
    let stopping = app.life.stopping();
    app.life.spawn(async move {
        let run = async {
            loop {
                let pass = store.call(|s| prune_once(s, crate::now_ms())).await;
                if let Err(error) = pass {
                    tracing::error!(%error, "history prune failed; retrying at the next interval");
                }
                smol::Timer::after(interval).await;
            }
        };
        run.or(stopping).await;
    });
}
