//! The worker's view of its own network path to the orchestrator, sent in
//! every heartbeat as `gatewayStatus` and `gatewayStatusDetail`:
//!
//! * `direct`: a TCP connection straight to the orchestrator;
//! * `proxy`: a CONNECT tunnel through an HTTP proxy, TLS end to end;
//! * `intercepted`: the certificate this connection was shown is not the
//!   one the orchestrator says it serves (`worker.accepted`'s
//!   `certificateSha256`): something on the way (a corporate
//!   TLS-inspecting proxy, or a balancer that terminates TLS) re-signed the
//!   traffic, with a CA this agent trusts, and can read it.
//!
//! Without TLS, or with an orchestrator that sends no fingerprint, the
//! detail says interception was not checked.

use crate::net::Endpoint;

/// What the heartbeats of one connection say about its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    pub status: &'static str,
    pub detail: String,
}

/// The path of a connection to `endpoint` that was shown the certificate
/// `seen`, to an orchestrator that says it serves `served`.
pub fn of(endpoint: &Endpoint, seen: Option<&str>, served: Option<&str>) -> Gateway {
    let route = match &endpoint.via {
        Some(p) => format!("through the HTTP proxy {} (CONNECT)", p.authority()),
        None => format!("direct to {}", endpoint.authority()),
    };
    let short = |h: &str| h.get(..16).unwrap_or(h).to_owned();
    match (seen, served) {
        (Some(seen), Some(served)) if seen != served => Gateway {
            status: "intercepted",
            detail: format!(
                "{route}: the TLS certificate presented ({}…) is not the one the orchestrator serves ({}…); \
                 a middlebox re-signs this connection and can read it",
                short(seen),
                short(served)
            ),
        },
        _ => Gateway {
            status: if endpoint.via.is_some() { "proxy" } else { "direct" },
            detail: match (seen, served) {
                (Some(_), Some(_)) => format!("{route}; TLS end to end to the orchestrator"),
                (None, _) => format!("{route}; unencrypted (loopback development)"),
                (Some(_), None) => {
                    format!("{route}; interception not checked (the orchestrator sent no certificate fingerprint)")
                }
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::Proxy;

    #[test]
    fn direct_proxied_or_intercepted() {
        let direct = Endpoint::parse("wss://orch.example:7443/v1/agent").unwrap();
        let proxied = direct
            .clone()
            .through(Some(Proxy::parse("http://squid:3128").unwrap()));
        let ok = of(&direct, Some("aa"), Some("aa"));
        assert_eq!(ok.status, "direct");
        assert!(ok.detail.contains("orch.example:7443"), "{ok:?}");
        let tunnelled = of(&proxied, Some("aa"), Some("aa"));
        assert_eq!(tunnelled.status, "proxy");
        assert!(tunnelled.detail.contains("squid:3128"), "{tunnelled:?}");
        let mitm = of(&proxied, Some("bbbb"), Some("aaaa"));
        assert_eq!(mitm.status, "intercepted");
        assert!(
            mitm.detail.contains("bbbb") && mitm.detail.contains("squid:3128"),
            "{mitm:?}"
        );
        assert!(of(&direct, Some("aa"), None).detail.contains("not checked"));
    }
}
