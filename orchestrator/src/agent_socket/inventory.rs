//! What a registered connection does with `worker.inventory` (hand its live
//! terminals to the relay, reconcile the worker's container records) and
//! with events (route those carrying a pending request's id to it).
//!
//! The reconcile only ever writes records: it never sends a command, so a
//! disconnection never stops, removes or recreates a container. (The
//! terminal relay answers the inventory's live sessions with
//! `terminal.attach`, as PROTOCOL.md section 6 asks.) Every state
//! transition it makes is logged, and so is every entry it leaves alone.

use protocol::worker::Inventory;
use protocol::{close, Body};

use super::session::{close_with, Conn, End};
use crate::now_ms;
use crate::store::{Reconciled, StoreError};

/// Most inventory entries one message may carry; the rest are ignored
/// (and logged). Far above what one machine runs.
const MAX_INVENTORY: usize = 10_000;

impl Conn {
    /// Reconcile the records of this worker with its inventory. Failures are
    /// logged; the connection goes on (the next accept brings a new inventory).
    pub(super) async fn on_inventory(&mut self, inventory: Inventory) -> Result<(), End> {
        let worker_id = self.worker_id.clone();
        let Inventory {
            containers,
            terminals,
        } = inventory;
        // Live terminals first: attaching them needs no store write.
        crate::terminal::on_inventory(&self.app, &worker_id, self.conn_id, terminals);
        let since = self.registered.as_ref().map_or(0, |r| r.accepted_rev);
        let epoch = self.registered.as_ref().map_or(0, |r| r.epoch);
        let total = containers.len();
        if total > MAX_INVENTORY {
            tracing::warn!(%worker_id, total, max = MAX_INVENTORY, "inventory truncated");
        }
        let mut items = Vec::with_capacity(total.min(MAX_INVENTORY));
        for info in containers.into_iter().take(MAX_INVENTORY) {
            let container_id = info.container_id.clone();
            match crate::wire::inventory_item(info) {
                Ok(item) => items.push(item),
                Err(reason) => {
                    tracing::warn!(%worker_id, container_id = %container_id.escape_debug(), %reason, "inventory entry refused")
                }
            }
        }
        tracing::info!(%worker_id, containers = items.len(), "inventory received; reconciling");
        let id = worker_id.clone();
        let outcome = self
            .app
            .store
            .call(move |s| s.reconcile(&id, epoch, &items, since, now_ms()))
            .await;
        match outcome {
            Ok(report) => log_report(&worker_id, &report),
            Err(error @ StoreError::Fenced { .. }) => {
                tracing::info!(%worker_id, %error, "inventory of a replaced connection ignored");
                return Err(close_with(
                    close::REPLACED,
                    "replaced by a newer connection",
                ));
            }
            Err(error) => tracing::error!(%worker_id, %error, "cannot reconcile the inventory"),
        }
        Ok(())
    }

    /// An event from the agent: one carrying a pending request's id goes to
    /// that request; others are logged.
    pub(super) fn on_event(&self, request_id: Option<String>, body: Body) {
        let worker_id = &self.worker_id;
        let ty = body.type_name();
        match request_id {
            Some(id) if self.app.hub.event(worker_id, &id, body) => {}
            Some(id) => {
                tracing::debug!(%worker_id, request_id = %id, ty, "event for no pending request")
            }
            None => tracing::debug!(%worker_id, ty, "event"),
        }
    }
}

fn log_report(worker_id: &str, report: &[Reconciled]) {
    for change in report {
        match change {
            Reconciled::Updated { id, from, to } => {
                tracing::info!(%worker_id, container_id = %id, %from, %to, "container state reconciled")
            }
            Reconciled::Adopted { id, state } => {
                tracing::info!(%worker_id, container_id = %id, %state, "unknown managed container adopted")
            }
            Reconciled::Lost { id, from } => {
                tracing::warn!(%worker_id, container_id = %id, %from, to = "lost", "container vanished from its worker")
            }
            Reconciled::Skipped { id, reason } => {
                tracing::warn!(%worker_id, container_id = %id, %reason, "inventory entry not reconciled")
            }
        }
    }
    tracing::info!(worker_id, changes = report.len(), "reconcile done");
}
