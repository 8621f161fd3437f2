//! Finds the stock policy components that `make policies` builds into
//! `policies/dist/` and hands their directory to `policy::stock` (which
//! embeds them with include_bytes!). Without them the build stops here
//! with what to run, instead of a bare "file not found".

use std::path::PathBuf;

const STOCK: [&str; 4] = ["plan-limits", "least-loaded", "binpack", "spread"];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let dist = std::env::var("CROPS_POLICIES_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|_| manifest.join("../policies/dist"));
    println!("cargo:rerun-if-env-changed=CROPS_POLICIES_DIST");
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
    }
    println!("cargo:rustc-env=CROPS_POLICIES_DIST={}", dist.display());
}
