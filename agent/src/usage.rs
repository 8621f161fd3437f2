//! The last minutes of each running managed container's CPU and memory,
//! sampled by the agent at every heartbeat while containers run, so a
//! dashboard that opens a container's graph sees its recent past at once
//! (`container.stats` answers with it), without the orchestrator storing
//! or polling anything.
//!
//! One `podman ps` (the managed containers) and one `podman stats` (the
//! running ones) per heartbeat, only when the heartbeat counted a running
//! container; none on an idle box. [`KEEP`] samples a container (five
//! minutes at the default 10 s heartbeat); a container no longer running
//! is forgotten at the next sample.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use protocol::container::{ContainerState, UsageSample};

use crate::podman::{Podman, PodmanError};

/// Samples kept per container.
pub const KEEP: usize = 30;

/// Container id -> its samples, oldest first. Shared by the heartbeat task
/// (which writes) and the `container.stats` command (which reads).
#[derive(Debug, Clone, Default)]
pub struct UsageHistory {
    samples: Arc<Mutex<HashMap<String, VecDeque<UsageSample>>>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl UsageHistory {
    /// Sample every running managed container now; forget the others.
    pub async fn sample(&self, podman: &Podman) -> Result<(), PodmanError> {
        let running: Vec<_> = podman
            .list_managed(None)
            .await?
            .into_iter()
            .filter(|c| c.state == ContainerState::Running)
            .collect();
        let engine_ids: Vec<&str> = running.iter().map(|c| c.engine_id.as_str()).collect();
        let stats = podman.stats(&engine_ids).await?;
        let at = now_ms();
        let taken = stats.into_iter().filter_map(|(engine_id, s)| {
            let c = running.iter().find(|c| c.engine_id == engine_id)?;
            let sample = UsageSample {
                at,
                cpu_percent: s.cpu_percent,
                memory_used: s.memory_used,
            };
            Some((c.container_id.clone(), sample))
        });
        self.record(taken);
        Ok(())
    }

    /// Keep `taken` (container id, sample); forget every container not in it.
    pub fn record(&self, taken: impl IntoIterator<Item = (String, UsageSample)>) {
        let mut all = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        let mut kept = HashMap::with_capacity(all.len());
        for (id, sample) in taken {
            let mut list = all.remove(&id).unwrap_or_default();
            if list.len() == KEEP {
                list.pop_front();
            }
            list.push_back(sample);
            kept.insert(id, list);
        }
        *all = kept;
    }

    /// Forget everything (no container runs).
    pub fn clear(&self) {
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// The samples of `container_id`, oldest first.
    pub fn of(&self, container_id: &str) -> Vec<UsageSample> {
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(container_id)
            .map(|l| l.iter().copied().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> UsageSample {
        UsageSample {
            at: ms,
            cpu_percent: ms as f64,
            memory_used: ms,
        }
    }

    #[test]
    fn keeps_the_newest_samples_of_running_containers_only() {
        let h = UsageHistory::default();
        for ms in 0..(KEEP as u64 + 5) {
            h.record([("a".to_owned(), at(ms)), ("b".to_owned(), at(ms))]);
        }
        let a = h.of("a");
        assert_eq!(a.len(), KEEP);
        assert_eq!(a.first().map(|s| s.at), Some(5));
        assert_eq!(a.last().map(|s| s.at), Some(KEEP as u64 + 4));
        // b stopped: gone at the next sample; a goes on.
        h.record([("a".to_owned(), at(100))]);
        assert!(h.of("b").is_empty());
        assert_eq!(h.of("a").last().map(|s| s.at), Some(100));
        h.clear();
        assert!(h.of("a").is_empty());
    }
}
