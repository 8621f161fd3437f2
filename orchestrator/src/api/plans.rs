//! A tenant's plan over HTTP: `PUT /v1/tenants/{id}/plan` (operator) and
//! the plan's JSON inside every tenant view.
//!
//! The body names a stock plan, `{"name": "pro"}`, or gives custom
//! numbers, `{"name": "custom", "workers": 4, "concurrentContainers": 8,
//! "historyDays": 30}` (`null` or absent `workers` /
//! `concurrentContainers` means unlimited). A stock plan takes no numbers:
//! they are SPEC.md's and change with it.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::{Deserialize, Serialize};

use super::tenants::TenantView;
use crate::http::{json, read_json, ApiError, Resp};
use crate::store::{Plan, PlanLimits, MAX_HISTORY_DAYS};
use crate::App;

/// A plan as the API shows it: its name and the numbers it grants
/// (`null`: unlimited).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanView {
    pub name: String,
    pub workers: Option<u32>,
    pub concurrent_containers: Option<u32>,
    pub history_days: u32,
}

impl From<Plan> for PlanView {
    fn from(plan: Plan) -> Self {
        let l = plan.limits();
        Self {
            name: plan.name().to_owned(),
            workers: l.workers,
            concurrent_containers: l.concurrent_containers,
            history_days: l.history_days,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SetPlan {
    name: String,
    #[serde(default)]
    workers: Option<u32>,
    #[serde(default)]
    concurrent_containers: Option<u32>,
    #[serde(default)]
    history_days: Option<u32>,
}

impl SetPlan {
    fn plan(self) -> Result<Plan, ApiError> {
        if self.name == "custom" {
            let history_days = self
                .history_days
                .ok_or_else(|| ApiError::bad_request("a custom plan needs historyDays"))?;
            if !(1..=MAX_HISTORY_DAYS).contains(&history_days) {
                return Err(ApiError::bad_request(format!(
                    "historyDays must be between 1 and {MAX_HISTORY_DAYS}"
                )));
            }
            return Ok(Plan::Custom(PlanLimits {
                workers: self.workers,
                concurrent_containers: self.concurrent_containers,
                history_days,
            }));
        }
        let plan = Plan::stock(&self.name).ok_or_else(|| {
            ApiError::bad_request("name must be free, starter, pro, enterprise or custom")
        })?;
        if self.workers.is_some()
            || self.concurrent_containers.is_some()
            || self.history_days.is_some()
        {
            return Err(ApiError::bad_request(format!(
                "the {} plan has fixed numbers; use name \"custom\" to give your own",
                self.name
            )));
        }
        Ok(plan)
    }
}

/// `PUT /v1/tenants/{id}/plan`: the tenant, with its new plan.
pub(crate) async fn set(
    app: &App,
    req: Request<Incoming>,
    tenant_id: &str,
) -> Result<Resp, ApiError> {
    let body: SetPlan = read_json(req).await?;
    let plan = body.plan()?;
    let id = tenant_id.to_owned();
    let tenant = app.store.call(move |s| s.set_plan(&id, plan)).await?;
    tracing::info!(tenant_id, plan = plan.name(), "tenant plan set");
    Ok(json(StatusCode::OK, &TenantView::from(tenant)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Plan, ApiError> {
        serde_json::from_str::<SetPlan>(body).unwrap().plan()
    }

    #[test]
    fn stock_names_or_custom_numbers() {
        assert_eq!(parse(r#"{"name":"starter"}"#).unwrap(), Plan::Starter);
        let custom = parse(r#"{"name":"custom","workers":3,"historyDays":7}"#).unwrap();
        assert_eq!(
            PlanView::from(custom),
            PlanView {
                name: "custom".into(),
                workers: Some(3),
                concurrent_containers: None,
                history_days: 7
            }
        );
        for bad in [
            r#"{"name":"gold"}"#,
            r#"{"name":"pro","historyDays":5}"#,
            r#"{"name":"custom"}"#,
            r#"{"name":"custom","historyDays":0}"#,
            r#"{"name":"custom","historyDays":99999}"#,
        ] {
            assert!(
                matches!(parse(bad), Err(ApiError::BadRequest { .. })),
                "{bad}"
            );
        }
        assert!(serde_json::from_str::<SetPlan>(r#"{"name":"pro","x":1}"#).is_err());
    }
}
