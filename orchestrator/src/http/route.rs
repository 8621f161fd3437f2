//! The route table: every path of the API, its parameters checked, and the
//! methods each answers (for 405 and `Allow`).
//!
//! Ids in paths are checked here, before any handler runs: tenant and
//! worker ids are the UUIDs we mint; container ids and background handles
//! follow `protocol::validate::id` (a client may choose a container's id).

use super::ApiError;

/// What a `POST`/`GET /v1/containers/{id}/<op>` route does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerOp {
    Setup,
    Start,
    Stop,
    Exec,
    Background,
    Stats,
}

/// Every route of the API, with its path parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    Healthz,
    Tenants,
    JoinTokens { tenant_id: &'a str },
    Enroll,
    Workers,
    Revoke { worker_id: &'a str },
    Agent,
    Containers,
    Container { id: &'a str },
    ContainerOp { id: &'a str, op: ContainerOp },
    Background { id: &'a str, handle: &'a str },
    BackgroundKill { id: &'a str, handle: &'a str },
    WorkerContainers { worker_id: &'a str },
    WorkerImages { worker_id: &'a str },
}

impl<'a> Route<'a> {
    /// Match a path. Unknown paths are 404; a malformed id is 400.
    pub fn parse(path: &'a str) -> Result<Self, ApiError> {
        let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
        let route = match segments.as_slice() {
            ["healthz"] => Self::Healthz,
            ["v1", "tenants"] => Self::Tenants,
            ["v1", "tenants", id, "join-tokens"] => Self::JoinTokens {
                tenant_id: valid_id("tenant", id)?,
            },
            ["v1", "enroll"] => Self::Enroll,
            ["v1", "workers"] => Self::Workers,
            ["v1", "workers", id, "revoke"] => Self::Revoke {
                worker_id: valid_id("worker", id)?,
            },
            ["v1", "workers", id, "containers"] => Self::WorkerContainers {
                worker_id: valid_id("worker", id)?,
            },
            ["v1", "workers", id, "images"] => Self::WorkerImages {
                worker_id: valid_id("worker", id)?,
            },
            ["v1", "agent"] => Self::Agent,
            ["v1", "containers"] => Self::Containers,
            ["v1", "containers", id] => Self::Container {
                id: container_id(id)?,
            },
            ["v1", "containers", id, op] => {
                let op = match *op {
                    "setup" => ContainerOp::Setup,
                    "start" => ContainerOp::Start,
                    "stop" => ContainerOp::Stop,
                    "exec" => ContainerOp::Exec,
                    "background" => ContainerOp::Background,
                    "stats" => ContainerOp::Stats,
                    _ => return Err(ApiError::not_found(format!("no route for {path}"))),
                };
                Self::ContainerOp {
                    id: container_id(id)?,
                    op,
                }
            }
            ["v1", "containers", id, "background", handle] => Self::Background {
                id: container_id(id)?,
                handle: background_handle(handle)?,
            },
            ["v1", "containers", id, "background", handle, "kill"] => Self::BackgroundKill {
                id: container_id(id)?,
                handle: background_handle(handle)?,
            },
            _ => return Err(ApiError::not_found(format!("no route for {path}"))),
        };
        Ok(route)
    }

    /// The methods this route answers, for 405 and `Allow`.
    pub fn allowed(self) -> &'static str {
        match self {
            Self::Healthz
            | Self::Workers
            | Self::Agent
            | Self::Background { .. }
            | Self::WorkerContainers { .. }
            | Self::ContainerOp {
                op: ContainerOp::Stats,
                ..
            } => "GET",
            Self::Tenants | Self::Containers | Self::WorkerImages { .. } => "GET, POST",
            Self::Container { .. } => "GET, DELETE",
            Self::JoinTokens { .. }
            | Self::Enroll
            | Self::Revoke { .. }
            | Self::ContainerOp { .. }
            | Self::BackgroundKill { .. } => "POST",
        }
    }
}

fn valid_id<'a>(what: &str, id: &'a str) -> Result<&'a str, ApiError> {
    if crate::auth::is_uuid(id) {
        Ok(id)
    } else {
        Err(ApiError::bad_request(format!(
            "{what} id must be a lowercase UUID"
        )))
    }
}

fn container_id(id: &str) -> Result<&str, ApiError> {
    protocol::validate::id("container id", id)
        .map(|()| id)
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

fn background_handle(handle: &str) -> Result<&str, ApiError> {
    protocol::validate::id("handle", handle)
        .map(|()| handle)
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0b4f6a0e-3c1d-4e2a-9f00-1234567890ab";

    #[test]
    fn routes_and_ids() {
        assert_eq!(Route::parse("/healthz").unwrap(), Route::Healthz);
        assert_eq!(
            Route::parse(&format!("/v1/workers/{ID}/revoke")).unwrap(),
            Route::Revoke { worker_id: ID }
        );
        assert!(matches!(
            Route::parse("/v1/workers/../revoke"),
            Err(ApiError::BadRequest { .. })
        ));
        assert!(matches!(
            Route::parse("/v1/tenants/x/join-tokens"),
            Err(ApiError::BadRequest { .. })
        ));
        assert!(matches!(
            Route::parse("/v1/tenants/"),
            Err(ApiError::NotFound { .. })
        ));
        assert!(matches!(
            Route::parse("/nope"),
            Err(ApiError::NotFound { .. })
        ));
        assert!(matches!(
            Route::parse("//v1/tenants"),
            Err(ApiError::NotFound { .. })
        ));
    }

    #[test]
    fn container_routes() {
        assert_eq!(
            Route::parse("/v1/containers/job-7/exec").unwrap(),
            Route::ContainerOp {
                id: "job-7",
                op: ContainerOp::Exec
            }
        );
        assert_eq!(
            Route::parse("/v1/containers/c1/background/h2/kill").unwrap(),
            Route::BackgroundKill {
                id: "c1",
                handle: "h2"
            }
        );
        assert_eq!(
            Route::parse("/v1/containers/c1").unwrap().allowed(),
            "GET, DELETE"
        );
        assert!(matches!(
            Route::parse("/v1/containers/-rf/start"),
            Err(ApiError::BadRequest { .. })
        ));
        assert!(matches!(
            Route::parse("/v1/containers/c1/background/..%2f"),
            Err(ApiError::BadRequest { .. })
        ));
        assert!(matches!(
            Route::parse("/v1/containers/c1/reboot"),
            Err(ApiError::NotFound { .. })
        ));
        assert!(matches!(
            Route::parse("/v1/workers/w/images"),
            Err(ApiError::BadRequest { .. })
        ));
    }
}
