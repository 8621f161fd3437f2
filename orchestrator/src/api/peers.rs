//! The two routes other replicas call (`crate::peer`): send a command to a
//! worker whose agent is connected here, and close a worker's socket. The
//! replica that took the user's call authorised, audits and counts it;
//! these routes only check that the caller is a replica of this store
//! (`Rule::Peer`) and relay.

use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use protocol::Envelope;

use crate::http::{json, read_json_limited, ApiError, Resp};
use crate::hub::Relayed;
use crate::peer::{
    self, CloseAnswer, CloseRequest, Message, RelayAnswer, RelayRequest, MAX_EVENT_BYTES,
};
use crate::App;

/// A relayed command's body: one protocol message and a few fields.
const MAX_RELAY_BODY: usize = protocol::MAX_TEXT_FRAME + 4096;

/// The longest deadline a replica may ask for (an image build's, plus
/// room): a relay never waits longer than any call could.
const MAX_RELAY_WAIT: Duration = Duration::from_secs(60 * 60);

/// `POST /internal/v1/relay`: send the command on this replica's connection
/// of the named epoch and answer with the worker's reply.
pub(crate) async fn relay(app: &App, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let request: RelayRequest = read_json_limited(req, MAX_RELAY_BODY).await?;
    let command = Envelope::decode(request.command.get())
        .map_err(|e| ApiError::bad_request(format!("the relayed command does not decode: {e}")))?;
    let timeout = Duration::from_millis(request.timeout_ms).min(MAX_RELAY_WAIT);
    let mut events = EventLog::default();
    let relayed = app
        .hub
        .relay(
            &request.worker_id,
            request.epoch,
            command.body,
            timeout,
            |event| events.push(peer::message(Envelope::event(event).encode())),
        )
        .await;
    let answer = match relayed {
        Relayed::Moved => RelayAnswer::moved(),
        Relayed::Done(result) => peer::answer(result, events.into_vec()),
    };
    Ok(json(StatusCode::OK, &answer))
}

/// `POST /internal/v1/close`: close the worker's socket here, if any.
pub(crate) async fn close(app: &App, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let request: CloseRequest = read_json_limited(req, 4096).await?;
    let closed = app
        .hub
        .close(&request.worker_id, request.code, &request.reason);
    tracing::info!(worker_id = %request.worker_id, closed, code = request.code, "socket close asked by a replica");
    Ok(json(StatusCode::OK, &CloseAnswer { closed }))
}

/// The events of one relayed command, at most [`MAX_EVENT_BYTES`]: the
/// oldest are dropped first (the API keeps a build's last lines only).
#[derive(Default)]
struct EventLog {
    events: std::collections::VecDeque<Message>,
    bytes: usize,
}

impl EventLog {
    fn push(&mut self, event: Message) {
        self.bytes += event.get().len();
        self.events.push_back(event);
        while self.bytes > MAX_EVENT_BYTES {
            match self.events.pop_front() {
                Some(old) => self.bytes -= old.get().len(),
                None => break,
            }
        }
    }

    fn into_vec(self) -> Vec<Message> {
        self.events.into()
    }
}
