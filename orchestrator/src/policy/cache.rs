//! Compiled policy modules kept on disk, so an activation, a simulation or
//! a restart loads an uploaded module in well under a second instead of
//! compiling it again (an 18 MB Python component takes Cranelift seconds,
//! and a debug build's much longer).
//!
//! One file per module and engine, `DATA/policy-cache/<sha256>-<engine>`:
//! the component's SHA-256 and a hash of the engine's compatibility
//! ([`wasmtime::Engine::precompile_compatibility_hash`]: wasmtime's version,
//! the target and every setting that changes the code). A file is
//!
//! ```text
//! "CROPSCW1" | HMAC-SHA256(secret, name | 0 | artefact) | artefact
//! ```
//!
//! where the artefact is [`wasmtime::component::Component::serialize`]'s
//! output and the secret is random, made once per data directory and kept
//! in the store (`Store::policy_cache_secret`). Deserialising an artefact
//! runs its machine code, so one is only deserialised when its tag checks
//! out: a file changed on disk, copied from another installation or from
//! another module's name is refused, removed, and the module compiled
//! again (and cached anew). wasmtime checks its own version and settings
//! once more when deserialising.
//!
//! The cache is best effort: a file that cannot be written or read costs a
//! compile, never a decision. Files of engines no longer in use are left
//! behind (an upgrade's old artefacts; delete the directory to reclaim).

use std::io::Write;
use std::path::{Path, PathBuf};

use ring::hmac;
use wasmtime::component::Component;
use wasmtime::Engine;

/// The first bytes of every cache file.
const MAGIC: &[u8; 8] = b"CROPSCW1";
/// The tag's length (HMAC-SHA256).
const TAG: usize = 32;

/// The directory under the data directory holding the artefacts.
pub const DIR: &str = "policy-cache";

/// A directory of HMAC-tagged compiled artefacts.
pub struct Cache {
    dir: PathBuf,
    key: hmac::Key,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("dir", &self.dir).finish()
    }
}

impl Cache {
    /// The cache in `dir` (created on the first write), tagged with `secret`.
    pub fn new(dir: PathBuf, secret: &[u8]) -> Self {
        Self {
            dir,
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// `DATA/policy-cache` of the data directory `data_dir`.
    pub fn in_data_dir(data_dir: &Path, secret: &[u8]) -> Self {
        Self::new(data_dir.join(DIR), secret)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file a module's artefact is kept in.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn tag(&self, name: &str, artefact: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(name.as_bytes());
        ctx.update(&[0]);
        ctx.update(artefact);
        ctx.sign()
    }

    /// The artefact stored under `name`, if there is one and its tag
    /// checks out. A file that does not is removed (and logged).
    pub fn load(&self, name: &str) -> Option<Vec<u8>> {
        let path = self.path(name);
        let mut file = match std::fs::read(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "policy cache file unreadable; compiling");
                return None;
            }
        };
        let verified = file.len() >= MAGIC.len() + TAG
            && file.starts_with(MAGIC)
            && same(
                self.tag(name, &file[MAGIC.len() + TAG..]).as_ref(),
                &file[MAGIC.len()..MAGIC.len() + TAG],
            );
        if !verified {
            tracing::warn!(path = %path.display(), "policy cache file refused: its tag does not match (changed, or not this installation's); compiling again");
            self.remove(name);
            return None;
        }
        file.drain(..MAGIC.len() + TAG);
        Some(file)
    }

    /// Keep `artefact` under `name` (written aside, then renamed into place,
    /// so a reader never sees half a file). Failures are logged only.
    pub fn store(&self, name: &str, artefact: &[u8]) {
        if let Err(error) = self.write(name, artefact) {
            tracing::warn!(dir = %self.dir.display(), %error, "policy cache not written; the next load compiles again");
        }
    }

    fn write(&self, name: &str, artefact: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let tag = self.tag(name, artefact);
        let tmp = self.dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(MAGIC)?;
        file.write_all(tag.as_ref())?;
        file.write_all(artefact)?;
        drop(file);
        std::fs::rename(&tmp, self.path(name)).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }

    /// Forget `name`'s artefact (one refused by wasmtime or by its tag).
    pub fn remove(&self, name: &str) {
        let _ = std::fs::remove_file(self.path(name));
    }
}

/// A module's name in the cache: its SHA-256 and the engine's
/// compatibility hash (wasmtime's version, target and settings), hex.
pub(super) fn name(engine: &Engine, bytes: &[u8]) -> String {
    use std::hash::{Hash, Hasher};
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    // SipHash with fixed keys: the same engine gives the same name from
    // one run of this binary to the next.
    let mut hasher = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}-{:016x}", hasher.finish())
}

/// The component `cache` holds under `name`, if its tag checks out and
/// this engine accepts it; a file it refuses is removed.
pub(super) fn component(cache: &Cache, engine: &Engine, name: &str) -> Option<Component> {
    let artefact = cache.load(name)?;
    // SAFETY: deserialising runs the artefact's machine code later. This
    // one is what `Component::serialize` wrote for a module of this hash on
    // an engine of this compatibility hash: `Cache::load` returns it only
    // when its HMAC, keyed by this data directory's secret (kept in the
    // store, never in the cache directory), matches the file's name and
    // contents. wasmtime checks its version and settings once more.
    match unsafe { Component::deserialize(engine, &artefact) } {
        Ok(component) => Some(component),
        Err(error) => {
            tracing::warn!(name, error = %format!("{error:#}"), "policy cache artefact refused by wasmtime; compiling again");
            cache.remove(name);
            None
        }
    }
}

/// Whether two tags are equal, in time independent of where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(name: &str, secret: &[u8]) -> Cache {
        let dir = std::env::temp_dir().join(format!(
            "crops-policy-cache-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        Cache::new(dir, secret)
    }

    #[test]
    fn an_artefact_comes_back_only_under_its_own_name_and_secret() {
        let c = cache("own", b"secret one");
        assert_eq!(c.load("a"), None);
        c.store("a", b"machine code");
        assert_eq!(c.load("a").as_deref(), Some(&b"machine code"[..]));
        // Another installation's secret: refused, and the file removed.
        let foreign = Cache::new(c.dir().to_path_buf(), b"secret two");
        assert_eq!(foreign.load("a"), None);
        assert!(!c.path("a").exists());
        // A valid file under another module's name: refused.
        c.store("a", b"machine code");
        std::fs::copy(c.path("a"), c.path("b")).expect("copy");
        assert_eq!(c.load("b"), None);
        assert!(c.load("a").is_some());
        let _ = std::fs::remove_dir_all(c.dir());
    }

    #[test]
    fn a_changed_or_truncated_file_is_refused() {
        let c = cache("tampered", b"secret");
        c.store("m", b"machine code");
        let mut bytes = std::fs::read(c.path("m")).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(c.path("m"), &bytes).expect("write");
        assert_eq!(c.load("m"), None);
        std::fs::write(c.path("m"), &bytes[..10]).expect("write");
        assert_eq!(c.load("m"), None);
        let _ = std::fs::remove_dir_all(c.dir());
    }

    /// The inode of `path`: a rename into place makes a new one.
    fn inode(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).expect("the cache file").ino()
    }

    #[test]
    fn a_module_compiles_once_and_a_tampered_or_foreign_artefact_is_compiled_again() {
        let host = super::super::testing::policies();
        let host = host.host();
        let bytes = super::super::stock::bytes("binpack").expect("stock bytes");
        let limits = super::super::Limits::default();
        let c = cache("engine", b"secret");
        let m = host
            .compile_cached(bytes, limits, Some(&c))
            .expect("compiles");
        assert_eq!(m.kind(), super::super::Kind::Placement);
        let files: Vec<_> = std::fs::read_dir(c.dir())
            .expect("the cache directory")
            .map(|e| e.expect("an entry").path())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        let file = &files[0];
        let good = std::fs::read(file).expect("read");
        let ino = inode(file);

        // Loaded again: from the file, which stays as it was.
        host.compile_cached(bytes, limits, Some(&c)).expect("loads");
        assert_eq!(inode(file), ino, "a cached module was compiled again");

        // One byte of machine code changed: refused, compiled, written anew.
        let mut bad = good.clone();
        let middle = bad.len() / 2;
        bad[middle] ^= 0x55;
        std::fs::write(file, &bad).expect("tamper");
        let m = host
            .compile_cached(bytes, limits, Some(&c))
            .expect("compiles");
        assert_eq!(m.kind(), super::super::Kind::Placement);
        assert_eq!(std::fs::read(file).expect("read"), good);

        // Another installation's file (its own secret): refused likewise,
        // and replaced by one of this installation's.
        let foreign = Cache::new(c.dir().to_path_buf(), b"another secret");
        let name = file
            .file_name()
            .expect("a name")
            .to_string_lossy()
            .into_owned();
        host.compile_cached(bytes, limits, Some(&foreign))
            .expect("compiles with the foreign cache");
        assert!(foreign.load(&name).is_some(), "the foreign file was loaded");
        let _ = std::fs::remove_dir_all(c.dir());
    }
}
