//! A decision's explanation, typed: what was asked (a create's request or
//! an enrolment), the plan and usage admission saw, each module's answer
//! (who decided, the fallback, the result or the error), the candidates
//! with each one's verdict, score and reason, and the worker chosen.
//!
//! One type for the scheduler that writes it (`scheduling`), the store
//! that keeps it (`store::DecisionRecord`), the API that shows it and
//! `simulate` that replays it. Its JSON is the shape the API has always
//! shown (`openapi.json`, `Decision.explanation`), and every field is
//! optional on reading, so decisions stored before this type read as they
//! were. A stored explanation that still does not read as one (written by
//! hand, or by a build with another shape) is kept as [`Recorded::Unreadable`]
//! with its JSON and the reason: listed as it is stored, and reported by
//! `simulate` rather than skipped.
//!
//! It lives here, beside the inputs it records, because the store keeps it
//! and `scheduling` uses the store: the store must not depend on
//! `scheduling`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Admission, Decided, Placement, PlanInput, Request, Usage, Verdict, WorkerInput};

/// Inputs, answers and modules of one decision (JSON camelCase; absent
/// parts are left out, as they always were).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    /// A create's request (admission and placement).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Request>,
    /// An enrolment's tenant (its admission only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrolment: Option<EnrolmentAsked>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanInput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission: Option<Answer<Admission>>,
    /// The candidates placement saw, in the order of its verdicts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<Vec<WorkerInput>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Answer<RecordedPlacement>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chosen_worker_id: Option<String>,
    /// Fields this build does not know, kept as stored.
    #[serde(flatten, default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// The tenant an enrolment was admitted for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrolmentAsked {
    pub tenant_id: String,
}

/// One module's answer: who decided, what failed when a last-good stood
/// in, the result, or the error (then `result` is null). Absent fields
/// read as null (serde's rule for `Option`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Answer<T> {
    pub module: String,
    pub fallback: Option<String>,
    pub result: Option<T>,
    pub error: Option<String>,
}

impl<T: Clone> From<&Decided<T>> for Answer<T> {
    fn from(d: &Decided<T>) -> Self {
        let (result, error) = match &d.value {
            Ok(v) => (Some(v.clone()), None),
            Err(e) => (None, Some(e.to_string())),
        };
        Self {
            module: d.module.clone(),
            fallback: d.fallback.clone(),
            result,
            error,
        }
    }
}

/// A placement as recorded: [`Placement`], with the verdicts and the
/// reason optional on reading (decisions recorded with only the choice
/// still read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedPlacement {
    /// One per candidate, in the order of [`Explanation::workers`].
    #[serde(default)]
    pub verdicts: Vec<Verdict>,
    /// The index of the chosen candidate.
    #[serde(default)]
    pub chosen: Option<u32>,
    #[serde(default)]
    pub reason: String,
}

impl From<Placement> for RecordedPlacement {
    fn from(p: Placement) -> Self {
        Self {
            verdicts: p.verdicts,
            chosen: p.chosen,
            reason: p.reason,
        }
    }
}

impl From<&Decided<Placement>> for Answer<RecordedPlacement> {
    fn from(d: &Decided<Placement>) -> Self {
        let (result, error) = match &d.value {
            Ok(p) => (Some(RecordedPlacement::from(p.clone())), None),
            Err(e) => (None, Some(e.to_string())),
        };
        Self {
            module: d.module.clone(),
            fallback: d.fallback.clone(),
            result,
            error,
        }
    }
}

/// A stored explanation: read as an [`Explanation`], or kept as stored
/// with why it does not read. Serialised as the explanation itself (or
/// the stored JSON), so the API's shape is one whichever it is.
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    Read(Box<Explanation>),
    Unreadable {
        stored: serde_json::Value,
        error: String,
    },
}

impl Recorded {
    /// The explanation, or why it does not read.
    pub fn explanation(&self) -> Result<&Explanation, &str> {
        match self {
            Self::Read(e) => Ok(e),
            Self::Unreadable { error, .. } => Err(error),
        }
    }

    /// `stored` read as an explanation, or kept with the reason it does not read.
    pub fn from_json(stored: serde_json::Value) -> Self {
        match Explanation::deserialize(&stored) {
            Ok(e) => Self::Read(Box::new(e)),
            Err(e) => Self::Unreadable {
                error: e.to_string(),
                stored,
            },
        }
    }
}

impl From<Explanation> for Recorded {
    fn from(e: Explanation) -> Self {
        Self::Read(Box::new(e))
    }
}

impl Serialize for Recorded {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Read(e) => e.serialize(s),
            Self::Unreadable { stored, .. } => stored.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Recorded {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(d).map(Self::from_json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The shape the scheduler wrote as untyped JSON before this type.
    fn as_written_before() -> serde_json::Value {
        json!({
            "request": { "tenantId": "t", "name": "x", "image": "busybox", "profile": "open",
                         "pinnedWorker": null, "platform": null, "arch": null, "region": null,
                         "memoryBytes": 1, "cpus": 1, "labels": [] },
            "plan": { "name": "free", "selfHostedWorkers": 1, "concurrentContainers": 3 },
            "usage": { "creating": 0, "created": 1, "running": 0, "exited": 0, "lost": 0,
                       "failed": 0, "selfHostedWorkers": 0 },
            "admission": { "module": "stock:plan-limits", "fallback": null,
                           "result": { "decision": "allow" }, "error": null },
            "workers": [{ "id": "w", "mode": "fleet", "tenantId": "", "platform": "linux",
                          "arch": "", "region": "", "labels": [], "cpuCount": 1,
                          "memoryTotal": 2, "memoryFree": 1, "diskFree": null,
                          "cpuLoadPermille": 0, "containersRunning": 0, "images": [],
                          "securityFloor": "open", "drained": false, "cordoned": false,
                          "online": true }],
            "placement": { "module": "stock:least-loaded", "fallback": null,
                           "result": { "verdicts": [{ "feasible": true, "reason": "ok", "score": 3 }],
                                       "chosen": 0, "reason": "least loaded" },
                           "error": null },
            "chosenWorkerId": "w",
        })
    }

    #[test]
    fn an_explanation_written_before_reads_and_writes_back_the_same() {
        let before = as_written_before();
        let read: Recorded = serde_json::from_value(before.clone()).expect("reads");
        let e = read.explanation().expect("typed");
        assert_eq!(e.chosen_worker_id.as_deref(), Some("w"));
        let placed = e.placement.as_ref().and_then(|p| p.result.as_ref());
        assert_eq!(placed.map(|p| p.verdicts[0].score), Some(3));
        assert_eq!(serde_json::to_value(&read).expect("writes"), before);
    }

    #[test]
    fn an_explanation_that_does_not_read_is_kept_as_stored_with_the_reason() {
        let stored = json!({ "workers": "not a list", "placement": { "module": "m" } });
        let read: Recorded = serde_json::from_value(stored.clone()).expect("reads");
        assert!(read.explanation().is_err(), "{read:?}");
        assert_eq!(serde_json::to_value(&read).expect("writes"), stored);
    }

    #[test]
    fn parts_left_out_stay_out() {
        let e = Explanation {
            enrolment: Some(EnrolmentAsked {
                tenant_id: "t".into(),
            }),
            ..Explanation::default()
        };
        let v = serde_json::to_value(&e).expect("writes");
        assert_eq!(v, json!({ "enrolment": { "tenantId": "t" } }));
    }
}
