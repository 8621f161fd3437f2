//! The stock policies, embedded from `policies/dist/*.wasm`, which
//! `make policies` (policies/build.sh) builds before the orchestrator: a
//! build without them stops at `build.rs` with a message saying so.

/// `(name, component bytes)` of every stock policy.
pub const MODULES: [(&str, &[u8]); 4] = [
    (
        "plan-limits",
        include_bytes!(concat!(env!("CROPS_POLICIES_DIST"), "/plan-limits.wasm")),
    ),
    (
        "least-loaded",
        include_bytes!(concat!(env!("CROPS_POLICIES_DIST"), "/least-loaded.wasm")),
    ),
    (
        "binpack",
        include_bytes!(concat!(env!("CROPS_POLICIES_DIST"), "/binpack.wasm")),
    ),
    (
        "spread",
        include_bytes!(concat!(env!("CROPS_POLICIES_DIST"), "/spread.wasm")),
    ),
];

/// The admission policy used when no module is active.
pub const DEFAULT_ADMISSION: &str = "plan-limits";
/// The placement policy used when no module is active.
pub const DEFAULT_PLACEMENT: &str = "least-loaded";

/// The bytes of a stock policy by name.
pub fn bytes(name: &str) -> Option<&'static [u8]> {
    MODULES.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}
