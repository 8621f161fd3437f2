//! Calls for a worker whose agent is connected to another replica: the
//! [`Remote`] half of the hub when several replicas share a store.
//!
//! A call on replica A for a worker owned by replica B (the `owner` of the
//! worker's record, B's `address` in its replica record, read in one
//! transaction and remembered: `routes`) goes to B over HTTP as one
//! [`RelayRequest`] naming the ownership epoch A read. B sends it on its
//! connection of that epoch only (`Hub::relay`), never on to a third
//! replica, and answers with the worker's reply and the events that came
//! before it, or [`RelayAnswer::Moved`] when it no longer holds that
//! connection; A then forgets the route and reads the owner again (twice
//! at most). A audits, counts and settles the call as if the agent were its
//! own: the replica that took the call is the one that records it.
//!
//! Replicas authenticate to each other with a key derived from the admin
//! token's hash (HMAC-SHA-256), which every replica of one store shares;
//! the key opens the two peer routes and nothing else, and is never
//! stored. Peer addresses are verified like any TLS server: against the
//! public roots, or this replica's own certificate (replicas that share
//! one certificate, or a self-signed one, trust each other).

mod link;
mod routes;
mod terminal;

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper::header::HeaderValue;
use protocol::{Body, Envelope};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::auth;
use crate::http::ApiError;
use crate::hub::{HubError, Remote};
use crate::store::Store;
use link::{Link, LinkError};
use routes::Routes;
pub(crate) use terminal::{DialError, Dialed, PeerSocket, PRINCIPAL_HEADER};

/// The route a replica relays a command to another through.
pub(crate) const RELAY_PATH: &str = "/internal/v1/relay";
/// The route a replica asks another to close a worker's socket through.
pub(crate) const CLOSE_PATH: &str = "/internal/v1/close";

/// Beyond the command's own deadline, how long A waits for B's answer
/// (B answers `timeout` itself at the deadline).
const ANSWER_MARGIN: Duration = Duration::from_secs(5);

/// Events (build progress) B keeps for one relayed command, in bytes; the
/// oldest go first. The API keeps only a build's last lines in any case.
pub(crate) const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// Why the peer link could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// One protocol message, carried as the JSON it is (not as a string of
/// it: escaped twice, a 4 MiB message could outgrow any bound).
pub(crate) type Message = Box<RawValue>;

/// `text`, one encoded protocol message, as a [`Message`].
pub(crate) fn message(text: String) -> Message {
    // `Envelope::encode` writes one JSON object.
    RawValue::from_string(text).unwrap_or_else(|e| unreachable!("an envelope is JSON: {e}"))
}

/// A command for B to send to the worker on its connection of `epoch`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RelayRequest {
    pub worker_id: String,
    pub epoch: u64,
    pub timeout_ms: u64,
    pub command: Message,
}

/// What became of a relayed command: `reply` with the worker's reply (a
/// result or an `error`) and the events it sent before it; `moved` when
/// B holds no connection of that epoch for the worker; `failed` with why
/// there is no reply. (A struct, not a tagged enum: serde reads raw JSON
/// values only in plain structs.)
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RelayAnswer {
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Failure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Outcome {
    Reply,
    Moved,
    Failed,
}

impl RelayAnswer {
    pub(crate) fn moved() -> Self {
        Self {
            outcome: Outcome::Moved,
            events: Vec::new(),
            reply: None,
            kind: None,
            detail: None,
        }
    }

    fn reply(events: Vec<Message>, reply: String) -> Self {
        Self {
            outcome: Outcome::Reply,
            events,
            reply: Some(message(reply)),
            ..Self::moved()
        }
    }

    fn failed(kind: Failure, detail: String) -> Self {
        Self {
            outcome: Outcome::Failed,
            kind: Some(kind),
            detail: Some(detail),
            ..Self::moved()
        }
    }
}

/// Why a relayed command got no reply (`HubError`'s kinds).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Failure {
    Offline,
    Disconnected,
    Timeout,
    BadReply,
    Internal,
}

/// Ask B to close the worker's socket.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CloseRequest {
    pub worker_id: String,
    pub code: u16,
    pub reason: String,
}

/// Whether B had a socket to close.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct CloseAnswer {
    pub closed: bool,
}

/// The bearer token replicas present to each other, from the admin
/// token's hash.
pub(crate) fn token(admin_hash: &[u8; 32]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, admin_hash);
    let tag = ring::hmac::sign(&key, b"crops peer link v1");
    format!("crops_peer_{}", auth::hex(tag.as_ref()))
}

/// Whether the request presents this store's peer key (401 if not, also
/// on a replica without a shared store, which has no peers).
pub(crate) fn authenticate(app: &crate::App, headers: &hyper::HeaderMap) -> Result<(), ApiError> {
    let presented = auth::bearer(headers).ok().flatten();
    match (&app.peers, presented) {
        (Some(peers), Some(given)) if peers.is_key(given) => Ok(()),
        _ => Err(ApiError::unauthorized(
            "this route is for the replicas of one store, with their peer key",
        )),
    }
}

/// This replica's links to the others.
pub(crate) struct Peers {
    /// Which replica owns each worker called lately (`routes`).
    routes: Routes,
    connector: futures_rustls::TlsConnector,
    /// `Bearer <peer key>`: what this replica presents, and the one key
    /// its peer routes accept.
    auth: HeaderValue,
    links: Mutex<HashMap<String, Arc<Link>>>,
}

impl Peers {
    /// Links from replica `replica_id`, verifying peers against the public
    /// roots and `own_cert` (this replica's certificate chain, if TLS).
    pub(crate) fn new(
        store: Arc<Store>,
        replica_id: String,
        admin_hash: &[u8; 32],
        own_cert: Option<&Path>,
        fresh_ms: u64,
    ) -> Result<Self, PeerError> {
        let auth = HeaderValue::try_from(format!("Bearer {}", token(admin_hash)))
            .unwrap_or_else(|_| unreachable!("hex is a valid header value"));
        Ok(Self {
            routes: Routes::new(store, replica_id, fresh_ms),
            connector: crate::tls::connector(own_cert)?,
            auth,
            links: Mutex::new(HashMap::new()),
        })
    }

    /// Whether `given` (a bearer token) is this store's peer key.
    pub(crate) fn is_key(&self, given: &str) -> bool {
        let key = self.auth.as_bytes().strip_prefix(b"Bearer ");
        key.is_some_and(|key| auth::constant_time_eq(key, given.as_bytes()))
    }

    /// Where a call for `worker_id` goes, read now (not remembered: a
    /// terminal or a socket to close wants the newest owner): its owner
    /// and a link to it, if another live replica with an address owns it.
    async fn route(
        &self,
        worker_id: &str,
    ) -> Result<Option<(crate::store::Ownership, Arc<Link>)>, crate::store::StoreError> {
        let Some(route) = self.routes.read(worker_id).await? else {
            return Ok(None);
        };
        Ok(self.link(&route.address).map(|link| (route.owner, link)))
    }

    fn link(&self, address: &str) -> Option<Arc<Link>> {
        let mut links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(link) = links.get(address) {
            return Some(Arc::clone(link));
        }
        match Link::new(address, &self.connector, self.auth.clone()) {
            Ok(link) => {
                let link = Arc::new(link);
                links.insert(address.to_owned(), Arc::clone(&link));
                Some(link)
            }
            Err(error) => {
                tracing::warn!(%error, "cannot reach a replica");
                None
            }
        }
    }

    async fn forward_body(
        &self,
        worker_id: &str,
        body: Body,
        timeout: Duration,
        on_event: &mut (dyn FnMut(Body) + Send),
    ) -> Result<Body, HubError> {
        let ty = body.type_name();
        let offline = || HubError::Offline {
            worker_id: worker_id.to_owned(),
        };
        let command = message(Envelope::request("relay", body).encode());
        let store_error = |source| HubError::Store {
            worker_id: worker_id.to_owned(),
            source,
        };
        // The remembered owner first; the store's when there is none, or
        // when the remembered one moved or cannot be reached (the command
        // was not sent); and once more when the owner read moved since.
        let mut next = self.routes.remembered(worker_id).map(|r| (r, true));
        let mut reads_left = 2;
        loop {
            let (route, remembered) = match next.take() {
                Some(found) => found,
                None if reads_left > 0 => {
                    reads_left -= 1;
                    match self.routes.read(worker_id).await.map_err(store_error)? {
                        Some(route) => (route, false),
                        None => return Err(offline()),
                    }
                }
                None => return Err(offline()),
            };
            let Some(link) = self.link(&route.address) else {
                self.routes.forget(worker_id, &route);
                return Err(offline());
            };
            let owner = &route.owner;
            let request = RelayRequest {
                worker_id: worker_id.to_owned(),
                epoch: owner.epoch,
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                command: command.clone(),
            };
            let answer = link
                .post::<_, RelayAnswer>(RELAY_PATH, &request, timeout + ANSWER_MARGIN)
                .await;
            let bad = |detail: String| HubError::BadReply {
                worker_id: worker_id.to_owned(),
                ty,
                detail,
            };
            let answer = answer.map(|a| (a.outcome, a));
            match answer {
                Ok((Outcome::Reply, RelayAnswer { events, reply, .. })) => {
                    for event in events {
                        if let Ok(event) = Envelope::decode(event.get()) {
                            on_event(event.body);
                        }
                    }
                    let reply = reply.ok_or_else(|| bad("a reply without its message".into()))?;
                    let reply = Envelope::decode(reply.get()).map_err(|e| bad(e.to_string()))?;
                    return match reply.body {
                        Body::Error(error) => Err(HubError::Agent {
                            worker_id: worker_id.to_owned(),
                            ty,
                            error,
                        }),
                        body => Ok(body),
                    };
                }
                Ok((Outcome::Moved, _)) => {
                    self.routes.forget(worker_id, &route);
                    continue;
                }
                Ok((Outcome::Failed, RelayAnswer { kind, detail, .. })) => {
                    let detail = detail.unwrap_or_default();
                    return Err(match kind.unwrap_or(Failure::Internal) {
                        Failure::Offline | Failure::Internal => offline(),
                        Failure::Disconnected => HubError::Disconnected {
                            worker_id: worker_id.to_owned(),
                            ty,
                        },
                        Failure::Timeout => HubError::Timeout {
                            worker_id: worker_id.to_owned(),
                            ty,
                            after: timeout,
                        },
                        Failure::BadReply => bad(detail),
                    });
                }
                Err(LinkError::Timeout { .. }) => {
                    return Err(HubError::Timeout {
                        worker_id: worker_id.to_owned(),
                        ty,
                        after: timeout,
                    })
                }
                // It answered, but not as a replica of this store does (a
                // refused key: another admin token; a body it would not
                // take, or an answer over the bound): say so, it is not
                // the worker being offline.
                Err(
                    error @ (LinkError::Status { .. }
                    | LinkError::Decode { .. }
                    | LinkError::TooBig { .. }),
                ) => {
                    tracing::warn!(worker_id, replica = %owner.replica, %error, "a replica refused a relayed command");
                    return Err(HubError::Replica {
                        worker_id: worker_id.to_owned(),
                        detail: format!("replica {}: {error}", owner.replica),
                    });
                }
                Err(error) => {
                    self.routes.forget(worker_id, &route);
                    // Not sent: an owner remembered from before may have
                    // died, and the worker registered elsewhere since.
                    if remembered && matches!(error, LinkError::Connect { .. }) {
                        continue;
                    }
                    tracing::warn!(worker_id, replica = %owner.replica, %error, "cannot relay a command");
                    return Err(offline());
                }
            }
        }
    }

    async fn close_remote(&self, worker_id: &str, code: u16, reason: &str) -> bool {
        let (owner, link) = match self.route(worker_id).await {
            Ok(Some(route)) => route,
            Ok(None) => return false,
            Err(error) => {
                tracing::warn!(worker_id, %error, "cannot read the worker's owner to close its socket");
                return false;
            }
        };
        let request = CloseRequest {
            worker_id: worker_id.to_owned(),
            code,
            reason: reason.to_owned(),
        };
        match link
            .post::<_, CloseAnswer>(CLOSE_PATH, &request, ANSWER_MARGIN)
            .await
        {
            Ok(answer) => answer.closed,
            Err(error) => {
                tracing::warn!(worker_id, replica = %owner.replica, %error, "cannot ask a replica to close a socket");
                false
            }
        }
    }
}

impl Remote for Peers {
    fn forward<'a>(
        &'a self,
        worker_id: &'a str,
        body: Body,
        timeout: Duration,
        on_event: &'a mut (dyn FnMut(Body) + Send),
    ) -> Pin<Box<dyn Future<Output = Result<Body, HubError>> + Send + 'a>> {
        Box::pin(self.forward_body(worker_id, body, timeout, on_event))
    }

    fn close<'a>(
        &'a self,
        worker_id: &'a str,
        code: u16,
        reason: &'a str,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(self.close_remote(worker_id, code, reason))
    }
}

/// What a relayed command's outcome becomes on the wire (B's side).
pub(crate) fn answer(result: Result<Body, HubError>, events: Vec<Message>) -> RelayAnswer {
    let failed = |kind, error: HubError| RelayAnswer::failed(kind, error.to_string());
    match result {
        Ok(body) => RelayAnswer::reply(events, Envelope::request("relay", body).encode()),
        Err(HubError::Agent { error, .. }) => RelayAnswer::reply(
            events,
            Envelope::error(Some("relay".into()), error).encode(),
        ),
        Err(e @ HubError::Offline { .. }) => failed(Failure::Offline, e),
        Err(e @ HubError::Disconnected { .. }) => failed(Failure::Disconnected, e),
        Err(e @ HubError::Timeout { .. }) => failed(Failure::Timeout, e),
        Err(e @ HubError::BadReply { .. }) => failed(Failure::BadReply, e),
        Err(e @ (HubError::RequestId(_) | HubError::Replica { .. } | HubError::Store { .. })) => {
            failed(Failure::Internal, e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_token_is_the_admin_hashs_and_no_other() {
        let a = token(&[1; 32]);
        assert!(a.starts_with("crops_peer_") && a.len() == "crops_peer_".len() + 64);
        assert_eq!(a, token(&[1; 32]));
        assert_ne!(a, token(&[2; 32]));
    }

    #[test]
    fn an_agent_error_crosses_as_the_reply_and_a_timeout_as_a_failure() {
        let error = protocol::ErrorReply::new(protocol::ErrorCode::NotFound, "no such container");
        let agent = HubError::Agent {
            worker_id: "w".into(),
            ty: "container.stop",
            error: error.clone(),
        };
        let reply = answer(Err(agent), vec![])
            .reply
            .expect("an agent error is a reply");
        assert_eq!(
            Envelope::decode(reply.get()).unwrap().body,
            Body::Error(error)
        );
        let late = HubError::Timeout {
            worker_id: "w".into(),
            ty: "exec",
            after: Duration::from_secs(1),
        };
        let text = serde_json::to_string(&answer(Err(late), vec![])).unwrap();
        assert!(
            text.contains(r#""outcome":"failed","kind":"timeout""#),
            "{text}"
        );
    }
}
