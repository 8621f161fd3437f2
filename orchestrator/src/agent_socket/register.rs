//! Registration and heartbeats of one connection: validation, the version
//! check, and what gets stored.

use std::sync::Arc;

use protocol::worker::{Heartbeat, Mode, Platform, Register};
use protocol::{close, Body, Envelope, ErrorCode, ErrorReply};

use super::session::{close_with, Conn, End, HubGuard, Registered};
use crate::now_ms;
use crate::store::{HeartbeatRecord, RegisterInfo, StoreError};

impl Conn {
    pub(super) async fn on_register(
        &mut self,
        request_id: Option<String>,
        register: Register,
    ) -> Result<(), End> {
        if let Err(invalid) = register.validate() {
            tracing::info!(worker_id = %self.worker_id, %invalid, "invalid register");
            self.reply_error(request_id, invalid.into()).await?;
            return Err(close_with(close::PROTOCOL_ERROR, "invalid worker.register"));
        }
        let range = protocol::MIN_PROTOCOL_VERSION..=protocol::PROTOCOL_VERSION;
        if !range.contains(&register.protocol_version) {
            let message = format!(
                "protocol version {} is not supported; this orchestrator speaks {} to {}",
                register.protocol_version,
                range.start(),
                range.end()
            );
            tracing::info!(worker_id = %self.worker_id, version = register.protocol_version, "unsupported protocol version");
            self.reply_error(
                request_id,
                ErrorReply::new(ErrorCode::UnsupportedVersion, message),
            )
            .await?;
            return Err(close_with(
                close::UNSUPPORTED_VERSION,
                "unsupported protocol version",
            ));
        }
        let memory_total = register.memory_total;
        let version = register.protocol_version;
        let now = now_ms();
        let id = self.worker_id.clone();
        let replica = self.app.replica_id.clone();
        let recorded = self
            .app
            .store
            .call(move |s| {
                s.record_register(
                    &id,
                    &replica,
                    &register.name,
                    &register.hostname,
                    register_info(&register),
                    now,
                )
            })
            .await;
        let epoch = match recorded {
            Ok(worker) => worker.owner.map_or(0, |o| o.epoch),
            Err(StoreError::Revoked { .. } | StoreError::NotFound { .. }) => {
                return Err(close_with(close::REVOKED, "credential revoked"));
            }
            Err(mismatch @ StoreError::ModeMismatch { .. }) => {
                // The enrolment decides a worker's mode, never the agent.
                tracing::warn!(worker_id = %self.worker_id, error = %mismatch, "register refused");
                let reply = ErrorReply::new(ErrorCode::Forbidden, mismatch.to_string());
                self.reply_error(request_id, reply).await?;
                return Err(close_with(
                    close::PROTOCOL_ERROR,
                    "mode contradicts the enrolment",
                ));
            }
            Err(error) => {
                tracing::error!(worker_id = %self.worker_id, %error, "cannot record a register");
                let reply = ErrorReply::new(ErrorCode::Internal, "cannot record the registration");
                self.reply_error(request_id, reply).await?;
                return Err(close_with(1011, "internal error"));
            }
        };
        // Stamped before the hub can route a command here (see `Registered`).
        let accepted_rev = crate::store::stamp();
        self.app
            .hub
            .register(&self.worker_id, self.conn_id, epoch, self.tx.clone(), now);
        self.registered = Some(Registered {
            memory_total,
            accepted_rev,
            epoch,
            _guard: HubGuard {
                hub: Arc::clone(&self.app.hub),
                worker_id: self.worker_id.clone(),
                conn_id: self.conn_id,
            },
        });
        // A revoke committed between our store write and the hub entry found
        // no socket to close: look once more, now that we are findable.
        let id = self.worker_id.clone();
        if let Ok(Some(worker)) = self.app.store.call(move |s| s.get_worker(&id)).await {
            if worker.revoked {
                return Err(close_with(close::REVOKED, "credential revoked"));
            }
        }
        let accepted = protocol::worker::Accepted {
            worker_id: self.worker_id.clone(),
            // The agent's version is within our range, so both speak it.
            protocol_version: version,
            heartbeat_interval_secs: self.app.heartbeat_secs,
            certificate_sha256: self.app.certificate_sha256.clone(),
        };
        tracing::info!(worker_id = %self.worker_id, conn_id = self.conn_id, "worker registered");
        let envelope = Envelope {
            request_id,
            body: Body::Accepted(accepted),
        };
        self.send_text(envelope.encode()).await
    }

    pub(super) async fn on_heartbeat(
        &mut self,
        request_id: Option<String>,
        beat: Heartbeat,
    ) -> Result<(), End> {
        let memory_total = self.registered.as_ref().map_or(0, |r| r.memory_total);
        if let Err(invalid) = beat.validate(memory_total) {
            tracing::info!(worker_id = %self.worker_id, %invalid, "heartbeat refused");
            return self.reply_error(request_id, invalid.into()).await;
        }
        let now = now_ms();
        let record = HeartbeatRecord {
            at: now,
            cpu_usage: beat.cpu_usage,
            memory_free: beat.memory_free,
            disk_total: beat.disk_total,
            disk_free: beat.disk_free,
            containers_running: beat.containers_running,
            gateway_status: beat.gateway_status,
            gateway_status_detail: beat.gateway_status_detail,
        };
        let epoch = self.registered.as_ref().map_or(0, |r| r.epoch);
        // Stored with the replica's next batch (`crate::heartbeats`).
        self.app
            .heartbeats
            .note(&self.worker_id, self.conn_id, epoch, record);
        self.app.hub.beat(&self.worker_id, self.conn_id, now);
        Ok(())
    }
}

fn register_info(r: &Register) -> RegisterInfo {
    RegisterInfo {
        protocol_version: r.protocol_version,
        platform: match r.platform {
            Platform::Linux => "linux",
            Platform::Darwin => "darwin",
            Platform::Windows => "windows",
        }
        .to_owned(),
        arch: r.arch.clone(),
        cpu_count: r.cpu_count,
        memory_total: r.memory_total,
        container_engines: r.container_engines.clone(),
        agent_version: r.agent_version.clone(),
        mode: match r.mode {
            Mode::Byom => "byom",
            Mode::Fleet => "fleet",
        }
        .to_owned(),
        labels: r.labels.clone(),
        security_floor: r.security_floor.map(|p| p.as_str().to_owned()),
        rootless: r.rootless,
        limitations: r.limitations.clone(),
    }
}
