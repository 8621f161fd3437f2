//! PROTOCOL.md kept in step with this crate: every ```json example that is a
//! message decodes with [`Envelope::decode`] and every field it shows is one
//! the crate knows (re-encoding keeps it, with the same value); every message
//! type, error code and close code the crate knows is named in the document.
//!
//! Section 7 (the browser's terminal socket) speaks another protocol; its
//! examples are not envelopes and are skipped.

use std::path::PathBuf;

use protocol::envelope::MESSAGE_TYPES;
use protocol::{Envelope, ErrorCode};
use serde_json::Value;

fn document() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../PROTOCOL.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One fenced ```json block: its first line number and its text.
struct Example {
    line: usize,
    text: String,
}

/// The ```json blocks of `doc`, except those under a heading naming the browser.
fn json_examples(doc: &str) -> Vec<Example> {
    fenced(doc, "json")
}

/// The fenced blocks of language `lang`, except under a heading naming the browser.
fn fenced(doc: &str, lang: &str) -> Vec<Example> {
    let fence = format!("```{lang}");
    let mut out = Vec::new();
    let mut section = String::new();
    let mut open: Option<Example> = None;
    for (n, line) in doc.lines().enumerate() {
        if let Some(ex) = open.as_mut() {
            if line.trim_start().starts_with("```") {
                let ex = open.take().unwrap();
                if !section.to_ascii_lowercase().contains("browser") {
                    out.push(ex);
                }
            } else {
                ex.text.push_str(line);
                ex.text.push('\n');
            }
            continue;
        }
        if line.starts_with("## ") {
            section = line.to_owned();
        } else if line.trim_start() == fence {
            open = Some(Example {
                line: n + 2,
                text: String::new(),
            });
        }
    }
    assert!(open.is_none(), "PROTOCOL.md: an unclosed {fence} block");
    out
}

/// The JSON values of one block: the whole block, or one per line.
fn values(ex: &Example) -> Vec<(usize, String, Value)> {
    if let Ok(v) = serde_json::from_str::<Value>(&ex.text) {
        return vec![(ex.line, ex.text.clone(), v)];
    }
    ex.text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let v = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("PROTOCOL.md line {}: not JSON: {e}\n{l}", ex.line + i));
            (ex.line + i, l.to_owned(), v)
        })
        .collect()
}

/// Every field of `shown` is in `encoded` with the same value (`encoded`
/// may hold more: defaults the example leaves out). `path` names the spot.
fn shown_fields_known(shown: &Value, encoded: &Value, path: &str) -> Result<(), String> {
    match (shown, encoded) {
        (Value::Object(s), Value::Object(e)) => {
            for (k, v) in s {
                let here = format!("{path}.{k}");
                let Some(ev) = e.get(k) else {
                    return Err(format!("{here} is not a field of this message"));
                };
                shown_fields_known(v, ev, &here)?;
            }
            Ok(())
        }
        (Value::Array(s), Value::Array(e)) if s.len() == e.len() => s
            .iter()
            .zip(e)
            .enumerate()
            .try_for_each(|(i, (sv, ev))| shown_fields_known(sv, ev, &format!("{path}[{i}]"))),
        (Value::Number(s), Value::Number(e)) if s.as_f64() == e.as_f64() => Ok(()),
        (s, e) if s == e => Ok(()),
        (s, e) => Err(format!("{path} reads back as {e}, not {s}")),
    }
}

/// Check one example; `Ok(true)` if it was a message.
fn check_example(line: usize, text: &str, value: &Value) -> Result<bool, String> {
    if value.get("type").is_none() {
        return Ok(false);
    }
    let env = Envelope::decode(text)
        .map_err(|e| format!("PROTOCOL.md line {line}: does not decode: {e}\n{text}"))?;
    let encoded: Value = serde_json::from_str(&env.encode()).expect("our own JSON");
    shown_fields_known(value, &encoded, "$")
        .map_err(|e| format!("PROTOCOL.md line {line}: {e}\n{text}"))?;
    Ok(true)
}

#[test]
fn every_message_example_in_protocol_md_decodes_with_known_fields() {
    let doc = document();
    let mut messages = 0;
    let mut failures = Vec::new();
    for ex in json_examples(&doc) {
        for (line, text, value) in values(&ex) {
            match check_example(line, &text, &value) {
                Ok(true) => messages += 1,
                Ok(false) => {}
                Err(e) => failures.push(e),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(
        messages >= 10,
        "only {messages} message examples found in PROTOCOL.md"
    );
}

#[test]
fn the_checker_catches_a_wrong_example() {
    let good = r#"{"type": "container.start", "requestId": "r-4", "data": {"containerId": "c-1"}}"#;
    let check = |t: &str| check_example(1, t, &serde_json::from_str(t).unwrap());
    assert_eq!(check(good), Ok(true));
    // A misspelt field (serde would ignore it), a missing one, a wrong type.
    let misspelt = good.replace("\"c-1\"}", "\"c-1\", \"timeout\": 5}");
    assert!(check(&misspelt).unwrap_err().contains("$.data.timeout"));
    assert!(check(&good.replace("containerId", "id")).is_err());
    assert!(check(&good.replace("\"c-1\"", "7")).is_err());
    assert!(check(&good.replace("container.start", "container.begin")).is_err());
    // Not a message: skipped.
    assert_eq!(check(r#"{"error": {"code": "x"}}"#), Ok(false));
}

#[test]
fn every_binary_frame_example_in_protocol_md_decodes() {
    let doc = document();
    let examples = fenced(&doc, "hex");
    assert!(!examples.is_empty(), "PROTOCOL.md shows no binary frame");
    for ex in examples {
        for (i, line) in ex.text.lines().enumerate() {
            let digits: String = line.split_whitespace().collect();
            let bytes: Vec<u8> = (0..digits.len())
                .step_by(2)
                .map(|at| u8::from_str_radix(digits.get(at..at + 2).unwrap_or("zz"), 16))
                .collect::<Result<_, _>>()
                .unwrap_or_else(|e| panic!("PROTOCOL.md line {}: not hex: {e}", ex.line + i));
            let frame = protocol::Frame::decode(&bytes)
                .unwrap_or_else(|e| panic!("PROTOCOL.md line {}: {e}", ex.line + i));
            assert_eq!(frame.encode().unwrap(), bytes);
        }
    }
}

#[test]
fn every_message_type_is_named_in_protocol_md() {
    let doc = document();
    for ty in MESSAGE_TYPES {
        // Results are named as `<command>.result` or in a command's row.
        let named = doc.contains(&format!("`{ty}`"))
            || ty
                .strip_suffix(".result")
                .is_some_and(|cmd| doc.contains(&format!("`{cmd}`")));
        assert!(named, "PROTOCOL.md never names `{ty}`");
    }
}

/// Every error code this crate defines; the match makes a new variant a
/// compile error here until it is listed (and so checked against the table).
fn all_codes() -> Vec<ErrorCode> {
    use ErrorCode::*;
    let all = vec![
        MalformedMessage,
        UnknownType,
        TooLarge,
        NotRegistered,
        AlreadyRegistered,
        UnsupportedVersion,
        InvalidArgument,
        NotFound,
        Conflict,
        Forbidden,
        Unsupported,
        EngineFailed,
        Timeout,
        RateLimited,
        Unavailable,
        Internal,
    ];
    for c in &all {
        match c {
            MalformedMessage | UnknownType | TooLarge | NotRegistered | AlreadyRegistered
            | UnsupportedVersion | InvalidArgument | NotFound | Conflict | Forbidden
            | Unsupported | EngineFailed | Timeout | RateLimited | Unavailable | Internal
            | Unknown => {}
        }
    }
    all
}

/// The first cells of the table rows under the heading `heading`.
fn table_keys(doc: &str, heading: &str) -> Vec<String> {
    let start = doc
        .find(heading)
        .unwrap_or_else(|| panic!("PROTOCOL.md has no {heading:?}"));
    doc[start..]
        .lines()
        .skip(1)
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .filter_map(|l| l.split('|').nth(1))
        .map(|c| c.trim().trim_matches('`').to_owned())
        .collect()
}

#[test]
fn the_error_code_table_is_the_crates() {
    let listed = table_keys(&document(), "### Replies and errors");
    let mut known: Vec<String> = all_codes().iter().map(|c| c.as_str().to_owned()).collect();
    let mut listed_sorted = listed.clone();
    known.sort();
    listed_sorted.sort();
    assert_eq!(listed_sorted, known, "error code table vs ErrorCode");
}

#[test]
fn the_close_code_table_names_every_close_code() {
    use protocol::close::*;
    let listed = table_keys(&document(), "### Close codes");
    let codes = [
        PROTOCOL_ERROR,
        REVOKED,
        UNSUPPORTED_VERSION,
        REGISTER_TIMEOUT,
        RATE_LIMITED,
        REPLACED,
        TIMEOUT,
        1000,
        1001,
        1009,
    ];
    for code in codes {
        assert!(
            listed.contains(&code.to_string()),
            "close code {code} missing from PROTOCOL.md's table {listed:?}"
        );
    }
}
