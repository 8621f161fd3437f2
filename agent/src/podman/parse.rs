//! Podman's JSON output (`ps`, `images`, `stats`) onto the protocol's types.
//! Every field Podman may leave out or set to `null` is optional here, so odd
//! output is a skipped entry or a zero, never a panic.

use std::collections::BTreeMap;

use protocol::container::{ContainerInfo, ContainerState, Profile};
use protocol::image::ImageInfo;
use serde::Deserialize;

use super::{LABEL_ALLOWED, LABEL_CONTAINER_ID, LABEL_PROFILE, LABEL_TENANT};

/// One element of `podman ps --format json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct PsEntry {
    pub id: String,
    #[serde(default)]
    names: Option<Vec<String>>,
    #[serde(default)]
    image: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    created: serde_json::Value,
    /// Present with `--size`: `{"rootFsSize", "rwSize"}`.
    #[serde(default)]
    pub size: Option<PsSize>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PsSize {
    #[serde(default)]
    pub rw_size: u64,
}

impl PsEntry {
    /// The container as the protocol describes it; `None` (logged) when a
    /// managed container lacks its id or tenant label.
    pub fn into_info(self) -> Option<ContainerInfo> {
        let labels = self.labels.unwrap_or_default();
        let (Some(container_id), Some(tenant_id)) =
            (labels.get(LABEL_CONTAINER_ID), labels.get(LABEL_TENANT))
        else {
            tracing::debug!(engine_id = %self.id, "managed container without id or tenant label; skipped");
            return None;
        };
        Some(ContainerInfo {
            container_id: container_id.clone(),
            tenant_id: tenant_id.clone(),
            name: self
                .names
                .unwrap_or_default()
                .into_iter()
                .next()
                .unwrap_or_default(),
            engine_id: self.id,
            image: self.image,
            state: parse_state(&self.state),
            profile: labels.get(LABEL_PROFILE).and_then(|p| parse_profile(p)),
            created_at: unix_millis(&self.created),
            allowed_domains: labels.get(LABEL_ALLOWED).map(|list| {
                list.split(',')
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect()
            }),
        })
    }
}

/// One element of `podman images --format json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ImageEntry {
    id: String,
    #[serde(default)]
    names: Option<Vec<String>>,
    #[serde(default)]
    size: serde_json::Value,
    #[serde(default)]
    created: serde_json::Value,
}

impl ImageEntry {
    pub fn into_info(self) -> ImageInfo {
        ImageInfo {
            id: self.id,
            names: self.names.unwrap_or_default(),
            size_bytes: self.size.as_u64().unwrap_or(0),
            created_at: unix_millis(&self.created),
        }
    }
}

/// One line of `podman stats --no-stream --format '{{json .ContainerStats}}'`:
/// raw numbers, unlike `--format json`, which prints human units ("1.2MB").
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct StatsEntry {
    #[serde(rename = "ContainerID")]
    pub container_id: String,
    #[serde(default, rename = "CPU")]
    pub cpu: f64,
    #[serde(default)]
    pub mem_usage: u64,
    #[serde(default)]
    pub mem_limit: u64,
    #[serde(default, rename = "PIDs")]
    pub pids: u64,
}

/// `open`, `standard` … as a [`Profile`].
pub(crate) fn parse_profile(p: &str) -> Option<Profile> {
    serde_json::from_value(serde_json::Value::String(p.to_owned())).ok()
}

/// Podman's state words onto the protocol's states.
pub(crate) fn parse_state(state: &str) -> ContainerState {
    match state.to_ascii_lowercase().as_str() {
        "running" => ContainerState::Running,
        "created" | "configured" | "initialized" => ContainerState::Created,
        "paused" => ContainerState::Paused,
        "exited" | "stopped" | "stopping" | "dead" => ContainerState::Exited,
        "removing" => ContainerState::Removed,
        _ => ContainerState::Unknown,
    }
}

/// Podman's `Created` (Unix seconds) as Unix milliseconds; `None` if absent or odd.
pub(crate) fn unix_millis(v: &serde_json::Value) -> Option<u64> {
    v.as_u64()
        .filter(|s| *s > 0)
        .and_then(|s| s.checked_mul(1000))
}
