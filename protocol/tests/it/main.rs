//! Golden tests: the fixtures under `tests/fixtures/` pin the wire format of
//! every message, and hostile input decodes to typed errors, never a panic.
//! [`document`] holds PROTOCOL.md to the same code.

mod document;

use std::path::PathBuf;

use protocol::envelope::MESSAGE_TYPES;
use protocol::{Body, DecodeError, Envelope, ErrorCode};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn fixture(ty: &str) -> String {
    let path = fixtures().join(format!("{ty}.json"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("fixture {} missing: {e}", path.display()))
}

/// Decoding a fixture and encoding it again gives the same JSON, field for field.
fn check_round_trip(ty: &str) {
    let text = fixture(ty);
    let env = Envelope::decode(&text).unwrap_or_else(|e| panic!("{ty}: {e}"));
    assert_eq!(
        env.body.type_name(),
        ty,
        "fixture {ty} decodes to another type"
    );
    let want: Value = serde_json::from_str(&text).unwrap();
    let got: Value = serde_json::from_str(&env.encode()).unwrap();
    assert_eq!(got, want, "{ty}: re-encoded JSON differs from the fixture");
}

#[test]
fn every_message_type_has_a_golden_fixture_that_round_trips() {
    for ty in MESSAGE_TYPES {
        check_round_trip(ty);
    }
}

#[test]
fn every_fixture_names_a_known_type() {
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let ty = name.strip_suffix(".json").expect("only .json fixtures");
        assert!(MESSAGE_TYPES.contains(&ty), "stray fixture {name}");
    }
}

/// Every message's kind is declared with it: each command has its result
/// (`<command>.result`, a result), and only results and `error` end a
/// request, so a receiver routes by kind, never by the spelling of `type`.
#[test]
fn every_message_is_classified_by_its_kind() {
    use protocol::MessageKind;
    let kinds: std::collections::HashMap<&str, MessageKind> = MESSAGE_TYPES
        .iter()
        .map(|ty| (*ty, Envelope::decode(&fixture(ty)).unwrap().body.kind()))
        .collect();
    for (ty, kind) in &kinds {
        if let Some(command) = ty.strip_suffix(".result") {
            assert_eq!(*kind, MessageKind::Result, "{ty}");
            assert_eq!(kinds.get(command), Some(&MessageKind::Command), "{ty}");
        }
        if *kind == MessageKind::Command {
            let result = format!("{ty}.result");
            assert_eq!(
                kinds.get(result.as_str()),
                Some(&MessageKind::Result),
                "{ty}"
            );
        }
        let ends = kind.ends_request();
        assert_eq!(ends, ty.ends_with(".result") || *ty == "error", "{ty}");
    }
    assert_eq!(kinds["worker.register"], MessageKind::Handshake);
    assert_eq!(kinds["worker.accepted"], MessageKind::Handshake);
    assert_eq!(kinds["images.build.progress"], MessageKind::Progress);
    assert_eq!(kinds["terminal.exited"], MessageKind::Event);
}

#[test]
fn message_types_are_unique() {
    let mut seen = std::collections::HashSet::new();
    for ty in MESSAGE_TYPES {
        assert!(seen.insert(ty), "{ty} declared twice");
    }
}

#[test]
fn unknown_type_is_a_typed_error_that_keeps_the_request_id() {
    let err = Envelope::decode(r#"{"type":"container.teleport","requestId":"r-9","data":{}}"#)
        .unwrap_err();
    match &err {
        DecodeError::UnknownType { ty, request_id } => {
            assert_eq!(ty, "container.teleport");
            assert_eq!(request_id.as_deref(), Some("r-9"));
        }
        other => panic!("expected UnknownType, got {other:?}"),
    }
    let reply = err.to_reply();
    assert_eq!(reply.code, ErrorCode::UnknownType);
    assert!(reply.message.contains("container.teleport"));
}

#[test]
fn bad_data_names_the_type_and_keeps_the_request_id() {
    let err = Envelope::decode(
        r#"{"type":"container.start","requestId":"r-1","data":{"containerId":7}}"#,
    )
    .unwrap_err();
    assert_eq!(err.request_id(), Some("r-1"));
    assert_eq!(err.to_reply().code, ErrorCode::MalformedMessage);
    assert!(err.to_string().contains("container.start"), "{err}");
}

#[test]
fn a_broken_envelope_keeps_its_request_id_when_it_has_a_valid_one() {
    for text in [
        r#"{"requestId":"r-2","data":{}}"#,
        r#"{"type":7,"requestId":"r-2"}"#,
        r#"{"type":"container.exec.result","requestId":"r-2","data":{"exitCode":0}}"#,
    ] {
        let err = Envelope::decode(text).unwrap_err();
        assert_eq!(err.request_id(), Some("r-2"), "{text}: {err}");
        assert_eq!(err.to_reply().code, ErrorCode::MalformedMessage);
    }
    for text in [r#"{"type":7,"requestId":"has space"}"#, "[1]", "{"] {
        assert_eq!(Envelope::decode(text).unwrap_err().request_id(), None);
    }
}

#[test]
fn garbage_never_panics() {
    let inputs = [
        "",
        "null",
        "[]",
        "{",
        "\"worker.register\"",
        r#"{"type":7}"#,
        r#"{"requestId":"r"}"#,
        r#"{"type":"worker.heartbeat","data":[]}"#,
        r#"{"type":"worker.heartbeat","data":{"cpuUsage":"high"}}"#,
        r#"{"type":"worker.register","requestId":"","data":{}}"#,
        r#"{"type":"worker.register","requestId":"has space","data":{}}"#,
        r#"{"type":"error","data":{"code":"no_such_code","message":"m"}}"#,
    ];
    for input in inputs {
        let _ = Envelope::decode(input);
    }
    let unknown_code = Envelope::decode(inputs[11]).unwrap();
    assert_eq!(
        unknown_code.body,
        Body::Error(protocol::ErrorReply::new(ErrorCode::Unknown, "m"))
    );
}

#[test]
fn oversized_text_is_refused_before_parsing() {
    let big = format!(
        r#"{{"type":"error","data":{{"code":"internal","message":"{}"}}}}"#,
        "x".repeat(protocol::MAX_TEXT_FRAME)
    );
    assert!(matches!(
        Envelope::decode(&big),
        Err(DecodeError::TooLarge { .. })
    ));
}

#[test]
fn absent_or_null_data_means_empty_parameters() {
    let a = Envelope::decode(r#"{"type":"images.list","requestId":"r-1"}"#).unwrap();
    let b = Envelope::decode(r#"{"type":"images.list","requestId":"r-1","data":null}"#).unwrap();
    assert_eq!(a, b);
}

#[test]
fn unknown_fields_are_ignored_for_forward_compatibility() {
    let text =
        fixture("worker.heartbeat").replace("\"cpuUsage\"", "\"futureField\":1,\"cpuUsage\"");
    assert!(Envelope::decode(&text).is_ok());
}

#[test]
fn heartbeat_validation_rejects_impossible_values() {
    let Body::Heartbeat(hb) = Envelope::decode(&fixture("worker.heartbeat")).unwrap().body else {
        unreachable!()
    };
    assert!(hb.validate(8 << 30).is_ok());
    let mut bad = hb.clone();
    bad.cpu_usage = 250.0;
    assert_eq!(bad.validate(8 << 30).unwrap_err().field, "cpuUsage");
    let mut bad = hb.clone();
    bad.cpu_usage = f64::NAN;
    assert!(bad.validate(8 << 30).is_err());
    let mut bad = hb.clone();
    bad.disk_free = Some(u64::MAX);
    assert_eq!(bad.validate(8 << 30).unwrap_err().field, "diskFree");
    assert_eq!(hb.validate(1024).unwrap_err().field, "memoryFree");
}

#[test]
fn register_validation_rejects_impossible_machines() {
    let Body::Register(reg) = Envelope::decode(&fixture("worker.register")).unwrap().body else {
        unreachable!()
    };
    assert!(reg.validate().is_ok());
    let mut bad = reg.clone();
    bad.cpu_count = 0;
    assert_eq!(bad.validate().unwrap_err().field, "cpuCount");
    let mut bad = reg.clone();
    bad.name = "evil\nname".into();
    assert_eq!(bad.validate().unwrap_err().field, "name");
    let mut bad = reg.clone();
    bad.container_engines = vec!["podman".into(); 9];
    assert_eq!(bad.validate().unwrap_err().field, "containerEngines");
    let mut bad = reg.clone();
    bad.labels.insert("--privileged".into(), "x".into());
    assert_eq!(bad.validate().unwrap_err().field, "labels");
    let mut bad = reg.clone();
    bad.labels.insert("zone".into(), "a\nb".into());
    assert_eq!(bad.validate().unwrap_err().field, "labels");
    let mut bad = reg.clone();
    bad.labels = (0..33).map(|i| (format!("k{i}"), String::new())).collect();
    assert_eq!(bad.validate().unwrap_err().field, "labels");
    for limitations in [
        vec!["limits\nignored".to_owned()],
        vec![String::new()],
        vec!["x".repeat(257)],
        vec!["limits ignored".to_owned(); 17],
    ] {
        let mut bad = reg.clone();
        bad.limitations = limitations;
        assert_eq!(bad.validate().unwrap_err().field, "limitations");
    }
}

#[test]
fn a_register_without_labels_or_floor_still_decodes() {
    // What agents before labels, floors and rootless reports send.
    let old = fixture("worker.register")
        .replace(r#","labels":{"disk":"ssd","gpu":"none"}"#, "")
        .replace(r#","securityFloor":"standard""#, "");
    let old = old[..old.find(r#","rootless""#).unwrap()].to_owned() + "}}";
    assert!(!old.contains("labels") && !old.contains("securityFloor"));
    assert!(!old.contains("rootless") && !old.contains("limitations"));
    let Body::Register(reg) = Envelope::decode(&old).unwrap().body else {
        unreachable!()
    };
    assert!(reg.labels.is_empty());
    assert_eq!(reg.security_floor, None);
    assert!(!reg.rootless && reg.limitations.is_empty());
    assert!(reg.validate().is_ok());
}

#[test]
fn profiles_order_from_weakest_to_strongest() {
    use protocol::container::Profile::*;
    assert!(Open < Standard && Standard < Strict && Strict < Offline);
}

#[test]
fn a_rotated_credential_is_checked_and_never_shown_by_debug() {
    let Body::RotateCredential(rotate) = Envelope::decode(&fixture("worker.rotate-credential"))
        .unwrap()
        .body
    else {
        unreachable!()
    };
    assert!(rotate.validate().is_ok());
    assert!(!format!("{rotate:?}").contains("crops_wkr_"), "{rotate:?}");
    let mut bad = rotate.clone();
    bad.credential = "has space".into();
    assert_eq!(bad.validate().unwrap_err().field, "credential");
    bad.credential = String::new();
    assert!(bad.validate().is_err());
    bad.credential = "x".repeat(257);
    assert!(bad.validate().is_err());
}
