//! Route matching, generic over a table: a method on a path pattern
//! (`{name}` segments are parameters), the rule saying who may call it, and
//! the matcher that finds a request's route, its path parameters checked.
//! The table itself, with the handler of each route, is `crate::router`'s;
//! this module knows no handler.
//!
//! Path parameters are checked here, by name, before any handler runs:
//! `tenantId`, `workerId`, `orgId`, `memberId`, `tokenId`, `decisionId` and
//! `policyId` are the UUIDs
//! we mint; `containerId` and `handle` follow `protocol::validate::id`
//! (a client may choose a container's id). A pattern naming any other
//! parameter matches nothing (a unit test keeps the table honest).

use hyper::Method;

use super::ApiError;

/// Whose object a rule is about: where the owning tenant or organisation
/// of a request is found. Resolved from the store, never from the client's
/// claims (a container's tenant is its record's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The `orgId` path parameter.
    Org,
    /// The `tenantId` path parameter.
    Tenant,
    /// The `containerId` path parameter: its record's tenant.
    Container,
    /// The `workerId` path parameter: its enrolment tenant (a fleet worker
    /// belongs to no tenant: only the operator passes).
    Worker,
    /// The `memberId` path parameter: the member's organisation.
    Member,
    /// The `tokenId` path parameter: the token's member.
    Token,
    /// The `tenantId` query parameter (required).
    QueryTenant,
    /// The `tenantId` or `orgId` query parameter; the operator may give neither.
    AuditQuery,
    /// The request body names it: the dispatcher checks the principal's
    /// kind and role, the handler checks the object after reading the body.
    Body,
}

/// Who may call a route. Every route has exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Anyone, no credentials.
    Public,
    /// Presents a join token in the body (checked by the handler, in the
    /// same transaction that uses it up).
    JoinToken,
    /// Presents a worker credential (checked before the upgrade).
    Worker,
    /// Another replica of the same store, by the peer key (`crate::peer`),
    /// checked before the handler; not audited here (the replica that
    /// took the user's call audits it).
    Peer,
    /// Only the operator (the admin token).
    Operator,
    /// Any operator or member; the handler shows only what the caller may see.
    SignedIn,
    /// The operator, or an admin of the organisation owning the target.
    OrgAdmin(Target),
    /// The operator, or any member of the target organisation.
    OrgMember(Target),
    /// The operator, an admin of the owning organisation, or a member
    /// assigned to the target's tenant.
    TenantMember(Target),
    /// The operator, an admin of the member's organisation, or the member.
    SelfOrOrgAdmin(Target),
}

impl Rule {
    /// Whether the dispatcher authenticates the caller (a bearer token of
    /// the operator or a member) before the handler runs.
    pub fn needs_principal(self) -> bool {
        !matches!(
            self,
            Self::Public | Self::JoinToken | Self::Worker | Self::Peer
        )
    }
}

/// A matched route's path parameters, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    pairs: Vec<(&'static str, String)>,
}

impl Params {
    /// The parameter `name`; empty if the route has none of that name
    /// (a table bug the route tests catch, never a client's doing).
    pub fn get(&self, name: &str) -> &str {
        self.pairs
            .iter()
            .find_map(|(k, v)| (*k == name).then_some(v.as_str()))
            .unwrap_or_default()
    }
}

/// A row of a route table, as the matcher sees it.
pub trait Pattern: 'static {
    /// The method, upper case (`GET`).
    fn method(&self) -> &'static str;
    /// The path pattern (`/v1/containers/{containerId}`).
    fn path(&self) -> &'static str;
}

/// The parameter names of a pattern segment, if it is one.
pub fn param_name(segment: &str) -> Option<&str> {
    segment.strip_prefix('{')?.strip_suffix('}')
}

/// Match `segments` against `pattern`: literal segments equal, parameter
/// segments non-empty. Returns the number of literal segments on a match.
fn matches(pattern: &str, segments: &[&str]) -> Option<usize> {
    let parts: Vec<&str> = pattern.trim_start_matches('/').split('/').collect();
    if parts.len() != segments.len() {
        return None;
    }
    let mut literals = 0;
    for (part, seg) in parts.iter().zip(segments) {
        match param_name(part) {
            Some(_) if !seg.is_empty() => {}
            Some(_) => return None,
            None if part == seg => literals += 1,
            None => return None,
        }
    }
    Some(literals)
}

/// Check one path parameter by its name. Unknown names are refused.
pub fn check_param(name: &str, value: &str) -> Result<(), ApiError> {
    match name {
        "tenantId" | "workerId" | "orgId" | "memberId" | "tokenId" | "decisionId" | "policyId" => {
            if crate::auth::is_uuid(value) {
                Ok(())
            } else {
                let what = name.trim_end_matches("Id");
                Err(ApiError::bad_request(format!(
                    "{what} id must be a lowercase UUID"
                )))
            }
        }
        "containerId" => protocol::validate::id("container id", value)
            .map_err(|e| ApiError::bad_request(e.to_string())),
        "handle" => protocol::validate::id("handle", value)
            .map_err(|e| ApiError::bad_request(e.to_string())),
        // A dashboard file's name, an agent's architecture: `crate::web` and
        // `crate::downloads` serve the ones they have, 404 for any other.
        "file" | "arch" => Ok(()),
        other => Err(ApiError::not_found(format!("no route parameter {other}"))),
    }
}

/// Find the route of `method` on `path` in `table`. Unknown paths are
/// 404, a malformed id 400, a known path with another method 405 (with the
/// methods it answers). The most specific pattern (most literal segments) wins.
pub fn find<R: Pattern>(
    table: &'static [R],
    method: &Method,
    path: &str,
) -> Result<(&'static R, Params), ApiError> {
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    let best = table
        .iter()
        .filter_map(|def| matches(def.path(), &segments).map(|n| (n, def.path())))
        .max_by_key(|(n, _)| *n)
        .map(|(_, pattern)| pattern)
        .ok_or_else(|| ApiError::not_found(format!("no route for {path}")))?;
    let mut params = Params::default();
    let parts = best.trim_start_matches('/').split('/');
    for (part, seg) in parts.zip(&segments) {
        if let Some(name) = param_name(part) {
            check_param(name, seg)?;
            let name = PARAM_NAMES
                .iter()
                .copied()
                .find(|n| *n == name)
                .unwrap_or("");
            params.pairs.push((name, (*seg).to_owned()));
        }
    }
    let same = || table.iter().filter(move |d| d.path() == best);
    let Some(def) = same().find(|d| d.method() == method.as_str()) else {
        let allow: Vec<&str> = same().map(|d| d.method()).collect();
        return Err(ApiError::MethodNotAllowed {
            method: method.clone(),
            path: path.to_owned(),
            allow: allow.join(", "),
        });
    };
    Ok((def, params))
}

/// Every parameter name a pattern may use (as `'static` keys for [`Params`]).
pub const PARAM_NAMES: &[&str] = &[
    "tenantId",
    "workerId",
    "orgId",
    "memberId",
    "tokenId",
    "containerId",
    "handle",
    "decisionId",
    "policyId",
    "file",
    "arch",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Row(&'static str, &'static str);

    impl Pattern for Row {
        fn method(&self) -> &'static str {
            self.0
        }
        fn path(&self) -> &'static str {
            self.1
        }
    }

    static TABLE: &[Row] = &[
        Row("GET", "/v1/containers/{containerId}"),
        Row("DELETE", "/v1/containers/{containerId}"),
        Row("POST", "/v1/containers/{containerId}/start"),
        Row("GET", "/v1/containers/{containerId}/background/{handle}"),
        Row("GET", "/v1/workers/{workerId}"),
        Row("GET", "/v1/workers/fleet"),
    ];

    #[test]
    fn the_most_specific_pattern_wins_and_params_are_checked() {
        let (row, params) = find(TABLE, &Method::GET, "/v1/containers/c1/background/h2").unwrap();
        assert_eq!(row.1, "/v1/containers/{containerId}/background/{handle}");
        assert_eq!(
            (params.get("containerId"), params.get("handle")),
            ("c1", "h2")
        );
        assert_eq!(params.get("workerId"), "");
        let (row, _) = find(TABLE, &Method::GET, "/v1/workers/fleet").unwrap();
        assert_eq!(row.1, "/v1/workers/fleet");
        assert!(matches!(
            find(TABLE, &Method::GET, "/v1/workers/not-a-uuid"),
            Err(ApiError::BadRequest { .. })
        ));
        assert!(matches!(
            find(TABLE, &Method::GET, "/v1/containers/-rf"),
            Err(ApiError::BadRequest { .. })
        ));
        assert!(matches!(
            find(TABLE, &Method::GET, "/v1/containers/"),
            Err(ApiError::NotFound { .. })
        ));
        match find(TABLE, &Method::PUT, "/v1/containers/c1") {
            Err(ApiError::MethodNotAllowed { allow, .. }) => assert_eq!(allow, "GET, DELETE"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_parameter_names_are_refused() {
        assert!(check_param("tenantId", "0b4f6a0e-3c1d-4e2a-9f00-1234567890ab").is_ok());
        assert!(check_param("tenantId", "0B4F6A0E-3C1D-4E2A-9F00-1234567890AB").is_err());
        assert!(matches!(
            check_param("somethingElse", "x"),
            Err(ApiError::NotFound { .. })
        ));
    }
}
