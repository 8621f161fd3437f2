//! Finds the stock policy components that `make policies` builds into
//! `policies/dist/` and hands their directory to `policy::stock` (which
//! embeds them with include_bytes!). Without them, or with components
//! built for another version of the contract than `policies/wit` (left
//! over from before a change of the WIT), the build stops here with what
//! to run, instead of a bare "file not found" or stock policies the
//! orchestrator refuses at run time.

use std::path::PathBuf;

const STOCK: [&str; 4] = ["plan-limits", "least-loaded", "binpack", "spread"];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let dist = std::env::var("CROPS_POLICIES_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|_| manifest.join("../policies/dist"));
    println!("cargo:rerun-if-env-changed=CROPS_POLICIES_DIST");
    let wit = manifest.join("../policies/wit/policy.wit");
    println!("cargo:rerun-if-changed={}", wit.display());
    let contract = std::fs::read_to_string(&wit)
        .ok()
        .and_then(|text| {
            let line = text
                .lines()
                .find(|l| l.starts_with("package crops:policy@"))?;
            let version = line
                .strip_prefix("package crops:policy@")?
                .trim_end_matches(';');
            Some(format!("crops:policy/types@{version}"))
        })
        .unwrap_or_else(|| panic!("{} names no `package crops:policy@...`", wit.display()));
    for name in STOCK {
        let path = dist.join(format!("{name}.wasm"));
        println!("cargo:rerun-if-changed={}", path.display());
        if !path.is_file() {
            panic!(
                "\n\nthe stock policy component {} is missing.\n\
                 Build the stock policies first: `make policies` (policies/build.sh).\n\n",
                path.display()
            );
        }
        let bytes = std::fs::read(&path).unwrap_or_default();
        if !bytes
            .windows(contract.len())
            .any(|w| w == contract.as_bytes())
        {
            panic!(
                "\n\nthe stock policy component {} is not built for {contract} \
                 (policies/wit changed since).\n\
                 Build the stock policies again: `make policies` (policies/build.sh).\n\n",
                path.display()
            );
        }
    }
    println!("cargo:rustc-env=CROPS_POLICIES_DIST={}", dist.display());
}
