//! The contract, `crops:policy@0.2.0` (policies/wit), as wasmtime's
//! `bindgen!` generates it: the types of `crops:policy/types` and, per
//! world, the typed exports (`admission`: `admit` and `admit-worker`;
//! `placement`: `place`). A module of the `policy` world is checked and
//! called through both. No type here is written by hand: a change to the
//! WIT changes these types, and the host stops compiling until it follows.
//!
//! The host's own serde types (`policy::types`, what the API and the store
//! speak) are converted into these at the call; a placement's workers are
//! packed by `policy::wire`.

/// The WIT package version the host speaks.
pub const VERSION: &str = "0.2.0";
/// The contract's package, as modules name it.
pub const CONTRACT: &str = "crops:policy@0.2.0";
/// The only instance a policy may import: the contract's types, no functions.
pub const TYPES_INSTANCE: &str = "crops:policy/types@0.2.0";

// Each world is included in a host world of its own name, since the
// generated struct of a world named `admission` would clash with the
// `admission` type the world uses (and `placement` likewise). The version
// here is the contract's: bumping the WIT fails this until it follows.

/// `admit` and `admit-worker`, with the contract's types.
pub mod admission {
    wasmtime::component::bindgen!({
        path: "../policies/wit",
        inline: "package crops:host; world admission-host { include crops:policy/admission@0.2.0; }",
    });
}

/// `place`, sharing the types the `admission` world generated.
pub mod placement {
    wasmtime::component::bindgen!({
        path: "../policies/wit",
        inline: "package crops:host; world placement-host { include crops:policy/placement@0.2.0; }",
        with: { "crops:policy/types": super::admission::crops::policy::types },
    });
}

pub use admission::crops::policy::types;
pub use admission::{AdmissionHost, AdmissionHostIndices as AdmissionIndices};
pub use placement::{PlacementHost, PlacementHostIndices as PlacementIndices};

/// Refuse a component built for another version of the contract, naming
/// both: every toolchain (wit-bindgen, componentize-py, componentize-js)
/// imports the contract's `types` instance under its versioned name,
/// e.g. `crops:policy/types@0.1.0`.
pub fn check_version(
    component: &wasmtime::component::Component,
    engine: &wasmtime::Engine,
) -> Result<(), super::PolicyError> {
    match other_version(component, engine) {
        None => Ok(()),
        Some(theirs) => Err(super::PolicyError::Invalid(format!(
            "the module is built for crops:policy@{theirs}; this orchestrator speaks \
             {CONTRACT} only: rebuild it against policies/wit ({CONTRACT})"
        ))),
    }
}

/// The contract version a component was built for, if it names another
/// than [`VERSION`].
fn other_version(
    component: &wasmtime::component::Component,
    engine: &wasmtime::Engine,
) -> Option<String> {
    let ty = component.component_type();
    let found = ty
        .imports(engine)
        .filter_map(|(name, _)| name.strip_prefix("crops:policy/"))
        .filter_map(|rest| rest.split_once('@').map(|(_, v)| v))
        .find(|v| *v != VERSION)
        .map(str::to_owned);
    found
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_constants_name_the_wit_package() {
        let wit = include_str!("../../../policies/wit/policy.wit");
        assert!(wit.contains(&format!("package {};", super::CONTRACT)));
        assert_eq!(super::CONTRACT, format!("crops:policy@{}", super::VERSION));
        let types = format!("crops:policy/types@{}", super::VERSION);
        assert_eq!(super::TYPES_INSTANCE, types);
    }
}
