//! Image commands: list the worker's images and build one from a Containerfile.

use serde::{Deserialize, Serialize};

/// Result of `images.list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageListing {
    pub images: Vec<ImageInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageInfo {
    pub id: String,
    /// Tags, e.g. `localhost/busybox:latest`.
    pub names: Vec<String>,
    pub size_bytes: u64,
    /// Creation time, Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<u64>,
}

/// `images.build`: build `tag` from a Containerfile's text, with an empty
/// build context. Progress arrives as `images.build.progress` events carrying
/// the build's `requestId`, then one `images.build.result`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageBuild {
    pub tag: String,
    pub containerfile: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
}

/// `images.build.progress` (agent -> orchestrator): build output. `line`
/// holds one or more newline-separated lines; agents batch them so a chatty
/// build sends at most 10 events a second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildProgress {
    pub line: String,
}

/// Result of `images.build`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageBuilt {
    pub image_id: String,
    pub tag: String,
}
