//! What the browser's terminal socket says, both ways (PROTOCOL.md section
//! 7): the query of the upgrade request, the browser's JSON control
//! messages (read strictly, each refusal a sentence naming the field), and
//! the server's JSON messages.

use serde_json::{json, Value};

use super::session::Exit;

/// Largest session id the protocol hands out (JavaScript keeps it exact).
const MAX_SESSION_ID: u64 = (1 << 53) - 1;
/// Largest window side, as `terminal.open` and `terminal.resize` allow.
const MAX_SIDE: u16 = 1000;

/// The query of `GET /v1/containers/{id}/terminal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    /// Attach to this session; `None` opens a new one.
    pub session: Option<u64>,
    /// With `session`: the first output byte wanted.
    pub offset: u64,
    pub cols: u16,
    pub rows: u16,
}

impl Query {
    /// Read the query string (`None`: no query). Unknown parameters are
    /// ignored; a malformed known one is refused with its name.
    pub fn parse(query: Option<&str>) -> Result<Self, String> {
        let mut q = Self {
            session: None,
            offset: 0,
            cols: 80,
            rows: 24,
        };
        let mut offset = None;
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "session" => {
                    let id = number(key, value)?;
                    if id > MAX_SESSION_ID {
                        return Err("session must be below 2^53".into());
                    }
                    q.session = Some(id);
                }
                "offset" => offset = Some(number(key, value)?),
                "cols" => q.cols = side(key, number(key, value)?)?,
                "rows" => q.rows = side(key, number(key, value)?)?,
                _ => {}
            }
        }
        match (offset, q.session) {
            (Some(_), None) => return Err("offset needs a session".into()),
            (Some(o), Some(_)) => q.offset = o,
            (None, _) => {}
        }
        Ok(q)
    }
}

fn number(key: &str, value: &str) -> Result<u64, String> {
    if value.is_empty() || value.len() > 20 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{key} must be a decimal number"));
    }
    value
        .parse()
        .map_err(|_| format!("{key} must be a decimal number below 2^64"))
}

fn side(key: &str, n: u64) -> Result<u16, String> {
    match u16::try_from(n) {
        Ok(v) if (1..=MAX_SIDE).contains(&v) => Ok(v),
        _ => Err(format!("{key} must be 1 to {MAX_SIDE}")),
    }
}

/// A control message from the browser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Resize { cols: u16, rows: u16 },
    Ack { offset: u64 },
    Close,
}

impl Control {
    /// Read one text message; the error is what the browser is told.
    pub fn parse(text: &str) -> Result<Self, String> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("not a JSON message: {e}"))?;
        let Some(ty) = value.get("type").and_then(Value::as_str) else {
            return Err("a control message is an object with a string \"type\"".into());
        };
        let field = |name: &str| -> Result<u64, String> {
            value
                .get(name)
                .and_then(Value::as_u64)
                .ok_or_else(|| format!("{ty}: {name} must be a non-negative integer"))
        };
        match ty {
            "resize" => Ok(Self::Resize {
                cols: side("resize: cols", field("cols")?)?,
                rows: side("resize: rows", field("rows")?)?,
            }),
            "ack" => Ok(Self::Ack {
                offset: field("offset")?,
            }),
            "close" => Ok(Self::Close),
            other => Err(format!(
                "unknown message type {:?}: expected resize, ack or close",
                other.chars().take(40).collect::<String>()
            )),
        }
    }
}

/// `{"type":"session",…}`: the first message of every socket.
pub fn session(session_id: u64, offset: u64, end: u64) -> String {
    json!({ "type": "session", "sessionId": session_id, "offset": offset, "end": end }).to_string()
}

/// `{"type":"status","worker":"online"|"offline"}`.
pub fn status(online: bool) -> String {
    let worker = if online { "online" } else { "offline" };
    json!({ "type": "status", "worker": worker }).to_string()
}

/// `{"type":"viewers","count":N}`: how many viewers the session has now.
pub fn viewers(count: usize) -> String {
    json!({ "type": "viewers", "count": count }).to_string()
}

/// `{"type":"exited",…}`, the last message before the close.
pub fn exited(exit: &Exit) -> String {
    json!({ "type": "exited", "exitCode": exit.exit_code, "reason": exit.reason }).to_string()
}

/// `{"type":"error","message":…}`: a message was refused; the socket stays.
pub fn error(message: &str) -> String {
    json!({ "type": "error", "message": message }).to_string()
}

/// An output message: the 8-byte big-endian offset, then the bytes.
pub fn output(offset: u64, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + bytes.len());
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_default_and_refuse_by_name() {
        let q = Query::parse(None).unwrap();
        assert_eq!((q.session, q.offset, q.cols, q.rows), (None, 0, 80, 24));
        let q = Query::parse(Some("session=42&offset=7&cols=120&rows=40&x=y")).unwrap();
        assert_eq!(
            (q.session, q.offset, q.cols, q.rows),
            (Some(42), 7, 120, 40)
        );
        for (query, word) in [
            ("cols=0", "cols"),
            ("rows=1001", "rows"),
            ("cols=-1", "cols"),
            ("session=abc", "session"),
            ("session=9007199254740992", "2^53"),
            ("offset=5", "offset needs a session"),
            ("session=1&offset=99999999999999999999999", "offset"),
        ] {
            let err = Query::parse(Some(query)).unwrap_err();
            assert!(err.contains(word), "{query}: {err}");
        }
    }

    #[test]
    fn control_messages_parse_strictly_with_reasons() {
        assert_eq!(
            Control::parse(r#"{"type":"resize","cols":100,"rows":30}"#),
            Ok(Control::Resize {
                cols: 100,
                rows: 30
            })
        );
        assert_eq!(
            Control::parse(r#"{"type":"ack","offset":123,"extra":true}"#),
            Ok(Control::Ack { offset: 123 })
        );
        assert_eq!(Control::parse(r#"{"type":"close"}"#), Ok(Control::Close));
        for (text, word) in [
            ("nope", "JSON"),
            ("[1]", "type"),
            (r#"{"type":5}"#, "type"),
            (r#"{"type":"resize","cols":0,"rows":3}"#, "cols"),
            (r#"{"type":"resize","cols":10}"#, "rows"),
            (r#"{"type":"ack","offset":-1}"#, "offset"),
            (r#"{"type":"ack","offset":1.5}"#, "offset"),
            (r#"{"type":"paste"}"#, "unknown message type"),
        ] {
            let err = Control::parse(text).unwrap_err();
            assert!(err.contains(word), "{text}: {err}");
        }
    }

    #[test]
    fn server_messages_have_the_documented_shape() {
        let v: Value = serde_json::from_str(&session(5, 10, 20)).unwrap();
        assert_eq!(
            v,
            json!({"type":"session","sessionId":5,"offset":10,"end":20})
        );
        let v: Value = serde_json::from_str(&status(false)).unwrap();
        assert_eq!(v, json!({"type":"status","worker":"offline"}));
        let v: Value = serde_json::from_str(&viewers(2)).unwrap();
        assert_eq!(v, json!({"type":"viewers","count":2}));
        let exit = Exit {
            exit_code: None,
            reason: "closed".into(),
        };
        let v: Value = serde_json::from_str(&exited(&exit)).unwrap();
        assert_eq!(
            v,
            json!({"type":"exited","exitCode":null,"reason":"closed"})
        );
        assert_eq!(output(258, b"hi"), vec![0, 0, 0, 0, 0, 0, 1, 2, b'h', b'i']);
    }
}
