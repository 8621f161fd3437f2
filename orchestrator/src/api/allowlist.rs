//! Egress allow-lists over HTTP: a tenant's default list
//! (`PUT /v1/tenants/{tenantId}/allowed-domains`, an organisation admin's)
//! and the list a container is created with ([`resolve`]), which the
//! agent enforces (`agent/src/egress`).
//!
//! Which list a container gets, by profile:
//!
//! | profile  | create names `allowedDomains` | create names none       |
//! |----------|-------------------------------|-------------------------|
//! | open     | 400: Open reaches everything  | none (no restriction)   |
//! | standard | that list                     | the tenant's default    |
//! | strict   | that list, if the tenant's default covers every pattern (else 400) | the tenant's default |
//! | offline  | 400: Offline reaches nothing  | none (no network)       |
//!
//! An empty list under Standard or Strict means the container reaches no
//! domain at all. The list is resolved once, at create, and kept on the
//! record: a change of the tenant's default applies to containers created
//! after it.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use protocol::container::Profile;
use protocol::domains;
use serde::Deserialize;

use super::tenants::TenantView;
use crate::http::{json, read_json, ApiError, Resp};
use crate::store::Tenant;
use crate::App;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SetAllowedDomains {
    allowed_domains: Vec<String>,
}

/// `PUT /v1/tenants/{tenantId}/allowed-domains`: replace the tenant's
/// default list; the tenant as now stored.
pub(crate) async fn set(
    app: &App,
    req: Request<Incoming>,
    tenant_id: &str,
) -> Result<Resp, ApiError> {
    let body: SetAllowedDomains = read_json(req).await?;
    let list = domains::check_list(&body.allowed_domains)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let id = tenant_id.to_owned();
    let count = list.len();
    let tenant = app
        .store
        .call(move |s| s.set_allowed_domains(&id, list.clone()))
        .await?;
    tracing::info!(tenant_id, count, "tenant allow-list set");
    Ok(json(StatusCode::OK, &TenantView::from(tenant)))
}

/// The list a container of `profile` is created with, from the create's
/// own (already checked) `requested` list and `tenant`'s default; see the
/// module docs.
pub(crate) fn resolve(
    profile: Profile,
    requested: Option<Vec<String>>,
    tenant: &Tenant,
) -> Result<Vec<String>, ApiError> {
    match (profile, requested) {
        (Profile::Open | Profile::Offline, None) => Ok(Vec::new()),
        (Profile::Open, Some(_)) => Err(ApiError::bad_request(
            "allowedDomains applies to standard and strict containers; an open one reaches every domain",
        )),
        (Profile::Offline, Some(_)) => Err(ApiError::bad_request(
            "allowedDomains applies to standard and strict containers; an offline one has no network",
        )),
        (Profile::Standard | Profile::Strict, None) => Ok(tenant.allowed_domains.clone()),
        (Profile::Standard, Some(list)) => Ok(list),
        (Profile::Strict, Some(list)) => {
            let wider: Vec<&str> = list
                .iter()
                .filter(|p| !domains::covered(&tenant.allowed_domains, p))
                .map(String::as_str)
                .collect();
            if wider.is_empty() {
                Ok(list)
            } else {
                Err(ApiError::bad_request(format!(
                    "a strict container reaches only its tenant's allow-list, which does not cover {}",
                    wider.join(", ")
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(list: &[&str]) -> Tenant {
        Tenant {
            id: "t".into(),
            name: "t".into(),
            created_at: 0,
            org_id: "default".into(),
            plan: Default::default(),
            allowed_domains: list.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn some(list: &[&str]) -> Option<Vec<String>> {
        Some(list.iter().map(|s| (*s).to_owned()).collect())
    }

    #[test]
    fn each_profile_gets_the_list_the_table_promises() {
        let t = tenant(&["pypi.org", "*.example.com"]);
        assert_eq!(
            resolve(Profile::Open, None, &t).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            resolve(Profile::Offline, None, &t).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            resolve(Profile::Standard, None, &t).unwrap(),
            t.allowed_domains
        );
        assert_eq!(
            resolve(Profile::Standard, some(&["github.com"]), &t).unwrap(),
            ["github.com"]
        );
        assert_eq!(
            resolve(Profile::Strict, some(&["a.example.com"]), &t).unwrap(),
            ["a.example.com"]
        );
        let wider = resolve(Profile::Strict, some(&["pypi.org", "github.com"]), &t).unwrap_err();
        assert!(
            wider.to_string().contains("does not cover github.com"),
            "{wider}"
        );
        for p in [Profile::Open, Profile::Offline] {
            assert!(resolve(p, some(&["pypi.org"]), &t).is_err());
        }
    }
}
