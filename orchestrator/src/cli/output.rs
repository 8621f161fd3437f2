//! How the admin subcommands show the API's answers to a human: plain
//! values, and tables with aligned columns.

use serde_json::Value;

/// A JSON value as plain text (strings unquoted, null as `-`).
pub(super) fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

pub(super) fn tenant_table(list: &Value) -> String {
    let rows = list["tenants"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .map(|t| vec![text(&t["id"]), text(&t["name"])])
                .collect()
        })
        .unwrap_or_default();
    table(&["ID", "NAME"], rows)
}

pub(super) fn worker_table(list: &Value, tenants: &Value, now_ms: u64) -> String {
    let tenant_name = |id: &Value| {
        tenants["tenants"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["id"] == *id))
            .map_or_else(|| text(id), |t| text(&t["name"]))
    };
    let rows = list["workers"]
        .as_array()
        .map(|ws| {
            ws.iter()
                .map(|w| {
                    let beat = &w["heartbeat"];
                    let last = w["lastHeartbeatAt"]
                        .as_u64()
                        .map_or_else(|| "never".to_owned(), |at| ago(now_ms, at));
                    let cpu = match (beat["cpuUsage"].as_f64(), w["cpuCount"].as_u64()) {
                        (Some(usage), Some(n)) => format!("{usage:.0}% of {n}"),
                        (None, Some(n)) => format!("{n} cores"),
                        _ => "-".to_owned(),
                    };
                    let mem = match (beat["memoryFree"].as_u64(), w["memoryTotal"].as_u64()) {
                        (Some(free), Some(total)) => {
                            format!("{} free of {}", gib(free), gib(total))
                        }
                        (None, Some(total)) => gib(total),
                        _ => "-".to_owned(),
                    };
                    let mut status = text(&w["status"]);
                    if w["revoked"].as_bool() == Some(true) {
                        status = "revoked".to_owned();
                    }
                    vec![
                        text(&w["id"]),
                        text(&w["name"]),
                        tenant_name(&w["tenantId"]),
                        status,
                        last,
                        cpu,
                        mem,
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(
        &[
            "ID",
            "NAME",
            "TENANT",
            "STATUS",
            "LAST HEARTBEAT",
            "CPU",
            "MEM",
        ],
        rows,
    )
}

fn ago(now_ms: u64, at_ms: u64) -> String {
    let secs = now_ms.saturating_sub(at_ms) / 1000;
    match secs {
        0..=119 => format!("{secs}s ago"),
        120..=7199 => format!("{}m ago", secs / 60),
        7200..=172_799 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

fn gib(bytes: u64) -> String {
    // Display only: a u64 -> f64 conversion is precise enough.
    let g = bytes as f64 / f64::from(1u32 << 30);
    format!("{g:.1} GiB")
}

/// Left-aligned columns separated by two spaces.
pub(super) fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut out = vec![line(header.iter().map(|h| (*h).to_owned()).collect())];
    out.extend(rows.into_iter().map(line));
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn worker_table_is_readable() {
        let workers = json!({ "workers": [{
            "id": "w1", "name": "nas", "tenantId": "t1", "status": "online", "revoked": false,
            "cpuCount": 4, "memoryTotal": 8u64 << 30, "lastHeartbeatAt": 9_000,
            "heartbeat": { "cpuUsage": 12.4, "memoryFree": 2u64 << 30 }
        }, {
            "id": "w2", "name": "pi", "tenantId": "t9", "status": "offline", "revoked": true,
            "cpuCount": null, "memoryTotal": null, "lastHeartbeatAt": null, "heartbeat": null
        }]});
        let tenants = json!({ "tenants": [{ "id": "t1", "name": "acme" }] });
        let t = worker_table(&workers, &tenants, 10_000);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "ID  NAME  TENANT  STATUS   LAST HEARTBEAT  CPU       MEM"
        );
        assert_eq!(
            lines[1],
            "w1  nas   acme    online   1s ago          12% of 4  2.0 GiB free of 8.0 GiB"
        );
        assert_eq!(
            lines[2],
            "w2  pi    t9      revoked  never           -         -"
        );
    }
}
