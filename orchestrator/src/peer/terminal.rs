//! A live terminal whose worker's agent is connected to another replica:
//! replica A (which took the browser's socket) opens a WebSocket of its
//! own to the owner B's peer route (`GET /internal/v1/terminal/{id}`,
//! [`TERMINAL_PATH`]), with the browser's query (`cols`, `rows`,
//! `session`, `offset`) as it came and the principal A authenticated, for
//! B's audit entry. B opens or attaches the session exactly as for a
//! browser of its own; A answers the browser with B's answer (its 101, or
//! its HTTP refusal as it came) and then copies the messages both ways
//! (`terminal::carried`). A refusal of A itself (401 or 403: B does not
//! take A's peer key, e.g. another admin token) is no answer to the
//! browser's request: it is [`DialError::Unauthorized`], which the browser
//! reads as 502 `replica_error` naming B, as relayed calls do, never as a
//! 401 of its own token. The bytes go over this socket, never through the
//! store.

use std::time::Duration;

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::Error as WsError;
use async_tungstenite::WebSocketStream;
use futures_lite::FutureExt;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, SEC_WEBSOCKET_PROTOCOL};
use hyper::{Response, StatusCode};

use super::link::{Io, LinkError};
use super::Peers;
use crate::http::Resp;
use crate::store::StoreError;

/// The route a replica carries a browser's terminal to the owner through.
pub(crate) const TERMINAL_PATH: &str = "/internal/v1/terminal";
/// The header naming, for B's audit entries, whom A let in (`operator`,
/// `member:<id>`): B audits the open or attach once, in that name.
pub(crate) const PRINCIPAL_HEADER: &str = "crops-principal";

/// The owner's terminal socket, as A holds it.
pub(crate) type PeerSocket = WebSocketStream<Box<dyn Io>>;

/// What the owner answered the carried upgrade with.
pub(crate) enum Dialed {
    /// Its 101: the socket to copy the browser's messages to and from.
    Open(PeerSocket),
    /// An HTTP refusal of the browser's request (409 not running, 404 no
    /// such session, 503 worker offline...), to hand the browser as it came.
    Refused(Resp),
}

/// Why the owner could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// Which replica holds the worker could not be read.
    #[error("cannot read the worker's replica: {0}")]
    Store(#[from] StoreError),
    /// The owner refused this replica itself (its peer key).
    #[error("replica {replica} ({authority}) refused this replica: {status}: {body}")]
    Unauthorized {
        replica: String,
        authority: String,
        status: StatusCode,
        body: String,
    },
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("the carried terminal request is not valid: {0}")]
    Request(String),
    #[error("WebSocket handshake with replica {authority} failed: {source}")]
    Handshake {
        authority: String,
        #[source]
        source: WsError,
    },
}

impl Peers {
    /// Carry a browser's terminal on `container_id` (of `worker_id`) to the
    /// replica that owns the worker: `None` if no other live replica does.
    /// `query` is the browser's, `principal` the label A audits it by,
    /// `subprotocol` whether the browser offered `crops.terminal.v1`;
    /// `max_message` bounds what the owner may send in one message; `wait`
    /// is how long the owner may take to open the session.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn terminal(
        &self,
        worker_id: &str,
        container_id: &str,
        query: Option<&str>,
        principal: &str,
        subprotocol: Option<&str>,
        max_message: usize,
        wait: Duration,
    ) -> Result<Option<Dialed>, DialError> {
        let Some((owner, link)) = self.route(worker_id).await? else {
            return Ok(None);
        };
        tracing::debug!(worker_id, replica = %owner.replica, "carrying a terminal to its owner");
        let asked = Dial {
            container_id,
            query,
            principal,
            subprotocol,
            max_message,
            wait: wait + super::ANSWER_MARGIN,
        };
        dial(&link, &owner.replica, asked).await.map(Some)
    }
}

/// What the carried upgrade asks of the owner.
struct Dial<'a> {
    container_id: &'a str,
    query: Option<&'a str>,
    principal: &'a str,
    subprotocol: Option<&'a str>,
    max_message: usize,
    wait: Duration,
}

/// The carried upgrade, on `link` to replica `replica`.
async fn dial(
    link: &super::link::Link,
    replica: &str,
    asked: Dial<'_>,
) -> Result<Dialed, DialError> {
    let Dial {
        container_id,
        query,
        principal,
        subprotocol,
        max_message,
        wait,
    } = asked;
    let invalid = |e: &dyn std::fmt::Display| DialError::Request(e.to_string());
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    let url = format!(
        "ws://{}{TERMINAL_PATH}/{container_id}{query}",
        link.authority()
    );
    let mut request = url.into_client_request().map_err(|e| invalid(&e))?;
    let headers = request.headers_mut();
    headers.insert(AUTHORIZATION, link.auth().clone());
    headers.insert(
        PRINCIPAL_HEADER,
        HeaderValue::from_str(principal).map_err(|e| invalid(&e))?,
    );
    if let Some(subprotocol) = subprotocol {
        headers.insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_str(subprotocol).map_err(|e| invalid(&e))?,
        );
    }
    let io = link.open().await?;
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    let authority = link.authority().to_owned();
    let handshake = async_tungstenite::client_async_with_config(request, io, Some(config))
        .or(async {
            smol::Timer::after(wait).await;
            Err(WsError::Io(std::io::ErrorKind::TimedOut.into()))
        })
        .await;
    match handshake {
        Ok((ws, _)) => Ok(Dialed::Open(ws)),
        Err(WsError::Http(refused))
            if matches!(
                refused.status(),
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
            ) =>
        {
            let body = refused.body().as_deref().unwrap_or_default();
            Err(DialError::Unauthorized {
                replica: replica.to_owned(),
                authority,
                status: refused.status(),
                body: String::from_utf8_lossy(body).chars().take(300).collect(),
            })
        }
        Err(WsError::Http(refused)) => {
            let status = refused.status();
            let body = refused.body().clone().unwrap_or_default();
            let mut resp = Response::new(Full::new(Bytes::from(body)));
            *resp.status_mut() = status;
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Ok(Dialed::Refused(resp))
        }
        Err(source) => Err(DialError::Handshake { authority, source }),
    }
}
