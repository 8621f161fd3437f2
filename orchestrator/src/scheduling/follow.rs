//! Following activations made by other replicas: on a shared database, a
//! policy activated, rolled back or replaced through one replica takes
//! effect on every replica within a second.
//!
//! Each replica reads the stored slots every [`EVERY`] and installs what
//! changed since it last looked, as its own start does (`activation`):
//! a slot that appeared or changed is installed (compiled once, from the
//! registry or the compile cache), a slot that disappeared goes back to the
//! stock default. The replica that made the change has installed it
//! already; installing the same module again changes nothing. With the
//! embedded store there is no other replica and nothing to follow.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::FutureExt;

use super::activation::{install_or_clear, Modules};
use crate::policy::{Role, Scope};
use crate::store::ActivePolicy;
use crate::App;

/// How often the stored slots are read.
pub const EVERY: Duration = Duration::from_millis(500);

type Slots = HashMap<(String, Role), ActivePolicy>;

/// Follow the stored activations for as long as the orchestrator runs
/// (only on a shared database).
pub fn spawn(app: &Arc<App>) {
    if !app.store.is_shared() {
        return;
    }
    let task_app = Arc::clone(app);
    let stopping = app.life.stopping();
    app.life.spawn(async move {
        let run = async {
            // Empty at first: the first pass installs every slot once, so a
            // change made between the start's restore and this read counts.
            let mut seen = Slots::new();
            loop {
                smol::Timer::after(EVERY).await;
                // Nothing to compare with until the start's restore is done.
                if task_app.policies.load_state().is_err() {
                    continue;
                }
                match task_app.store.call(|s| s.active_policies()).await {
                    Ok(now) => {
                        let now: Slots = now
                            .into_iter()
                            .map(|s| ((s.scope.clone(), s.role), s))
                            .collect();
                        apply(&task_app, &seen, &now).await;
                        seen = now;
                    }
                    Err(error) => tracing::warn!(%error, "cannot read the stored policy slots"),
                }
            }
        };
        run.or(stopping).await;
    });
}

/// Install what differs between `before` and `now`.
async fn apply(app: &App, before: &Slots, now: &Slots) {
    let mut modules = Modules::default();
    for (key, slot) in now {
        if before.get(key) != Some(slot) {
            tracing::info!(scope = %slot.scope, role = %slot.role, policy_id = %slot.current.policy_id, "policy slot changed on another replica");
            let _ = install_or_clear(app, slot, &mut modules).await;
        }
    }
    for (scope, role) in before.keys().filter(|k| !now.contains_key(*k)) {
        if let Some(scope) = Scope::from_key(scope) {
            tracing::info!(scope = %scope.key(), %role, "policy slot cleared on another replica");
            // Clearing a slot cannot fail.
            let _ = app.policies.install(scope, *role, None);
        }
    }
}
