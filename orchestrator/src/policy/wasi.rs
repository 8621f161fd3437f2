//! The null WASI context: what a policy gets when its toolchain imports
//! WASI 0.2 (componentize-py, componentize-js), which is nothing.
//!
//! * no preopened directories, no environment, no arguments, no cwd;
//! * stdin is closed; stdout and stderr are captured per decision, each
//!   capped at [`OUTPUT_CAP`] bytes (the rest is counted and dropped, never
//!   an error), and logged with the decision;
//! * no sockets: TCP, UDP and name lookups are refused, every address denied;
//! * time does not pass: the wall clock reads [`WALL_CLOCK`] and the
//!   monotonic clock 0 for the whole decision, and a sleep (a clock
//!   pollable) is ready at once, so nothing can block the host thread;
//! * randomness is a fixed cycle of bytes from [`RANDOM_SEED`].
//!
//! So the same input gives the same decision, as it does for the Rust
//! guests, which import nothing and never see this module. Fuel and the
//! memory cap apply to WASI guests exactly as to the others.

use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock;
use wasmtime_wasi::p2::{DynPollable, OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{
    Deterministic, HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView,
    WasiView,
};

use super::engine::Ctx;
use super::PolicyError;

/// Bytes of stdout, and of stderr, kept per decision.
pub const OUTPUT_CAP: usize = 16 << 10;
/// What the wall clock reads: 2025-01-01T00:00:00Z.
pub const WALL_CLOCK: Duration = Duration::from_secs(1_735_689_600);
/// The seed of the byte cycle `wasi:random` hands out.
pub const RANDOM_SEED: u64 = 0x0c20_9050_1c1e_5eed;
/// The longest random buffer a guest may ask for at once (it traps beyond).
const MAX_RANDOM_BYTES: u64 = 1 << 20;

/// Whether a component import needs this context.
pub(super) fn is_wasi(import: &str) -> bool {
    import.starts_with("wasi:")
}

/// Grant every WASI 0.2 interface wasmtime-wasi implements (sync), each
/// backed by the null context, with the monotonic clock replaced by one
/// where time does not pass. `wasi:http` and anything else stay ungranted.
pub(super) fn add_to_linker(linker: &mut Linker<Ctx>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    linker.allow_shadowing(true);
    monotonic_clock::add_to_linker::<Ctx, TimelessClock>(linker, |ctx| {
        Timeless(ctx.wasi().table())
    })?;
    linker.allow_shadowing(false);
    Ok(())
}

/// One decision's WASI state, made fresh for each decision.
pub(super) struct NullWasi {
    ctx: WasiCtx,
    table: ResourceTable,
    stdout: Capture,
    stderr: Capture,
}

impl NullWasi {
    pub(super) fn new() -> Self {
        let (stdout, stderr) = (Capture::default(), Capture::default());
        let mut b = WasiCtxBuilder::new();
        b.stdout(stdout.clone())
            .stderr(stderr.clone())
            .wall_clock(Fixed)
            .monotonic_clock(Fixed)
            .secure_random(Deterministic::new(RANDOM_BYTES.clone()))
            .insecure_random(Deterministic::new(RANDOM_BYTES.clone()))
            .insecure_random_seed(u128::from(RANDOM_SEED))
            .max_random_size(MAX_RANDOM_BYTES)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }));
        Self {
            ctx: b.build(),
            table: ResourceTable::new(),
            stdout,
            stderr,
        }
    }

    fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    /// What the guest wrote so far, each stream capped.
    pub(super) fn output(&self) -> Output {
        let (stdout, stdout_dropped) = self.stdout.contents();
        let (stderr, stderr_dropped) = self.stderr.contents();
        Output {
            stdout,
            stderr,
            dropped: stdout_dropped + stderr_dropped,
        }
    }
}

/// A decision's captured output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    /// Bytes written beyond the caps and dropped.
    pub dropped: u64,
}

impl Output {
    pub fn is_empty(&self) -> bool {
        self.stdout.is_empty() && self.stderr.is_empty() && self.dropped == 0
    }
}

impl Ctx {
    /// The decision's WASI state (made on first use when the store was
    /// created without one, which only a WASI guest can ask for).
    fn wasi(&mut self) -> &mut NullWasi {
        self.wasi.get_or_insert_with(|| Box::new(NullWasi::new()))
    }
}

impl WasiView for Ctx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let wasi = self.wasi();
        WasiCtxView {
            ctx: &mut wasi.ctx,
            table: &mut wasi.table,
        }
    }
}

/// 4 KiB of SplitMix64 output from [`RANDOM_SEED`], cycled.
static RANDOM_BYTES: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let mut state = RANDOM_SEED;
    (0..512)
        .flat_map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)).to_le_bytes()
        })
        .collect()
});

/// Both clocks, stopped.
struct Fixed;

impl HostWallClock for Fixed {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        WALL_CLOCK
    }
}

impl HostMonotonicClock for Fixed {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        0
    }
}

/// `wasi:clocks/monotonic-clock` where time does not pass: every
/// subscription is ready at once (wasmtime-wasi's would sleep for real,
/// which fuel cannot interrupt).
struct Timeless<'a>(&'a mut ResourceTable);

/// Names [`Timeless`] for the generated `add_to_linker`.
struct TimelessClock;

impl HasData for TimelessClock {
    type Data<'a> = Timeless<'a>;
}

impl monotonic_clock::Host for Timeless<'_> {
    fn now(&mut self) -> wasmtime::Result<u64> {
        Ok(HostMonotonicClock::now(&Fixed))
    }

    fn resolution(&mut self) -> wasmtime::Result<u64> {
        Ok(HostMonotonicClock::resolution(&Fixed))
    }

    fn subscribe_instant(&mut self, _when: u64) -> wasmtime::Result<Resource<DynPollable>> {
        self.ready()
    }

    fn subscribe_duration(&mut self, _duration: u64) -> wasmtime::Result<Resource<DynPollable>> {
        self.ready()
    }
}

impl Timeless<'_> {
    fn ready(&mut self) -> wasmtime::Result<Resource<DynPollable>> {
        let ready = self.0.push(Ready)?;
        wasmtime_wasi::p2::subscribe(self.0, ready)
    }
}

/// A pollable that is always ready.
struct Ready;

#[wasmtime_wasi::async_trait]
impl Pollable for Ready {
    async fn ready(&mut self) {}
}

/// A capped in-memory sink for stdout or stderr: it accepts every write,
/// keeps the first [`OUTPUT_CAP`] bytes and counts the rest.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Captured>>);

#[derive(Default)]
struct Captured {
    kept: Vec<u8>,
    dropped: u64,
}

impl Capture {
    fn write(&self, bytes: &[u8]) {
        let mut c = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let room = OUTPUT_CAP.saturating_sub(c.kept.len());
        let (kept, dropped) = bytes.split_at(bytes.len().min(room));
        c.kept.extend_from_slice(kept);
        c.dropped += dropped.len() as u64;
    }

    fn contents(&self) -> (String, u64) {
        let c = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        (String::from_utf8_lossy(&c.kept).into_owned(), c.dropped)
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    /// Only WASIp3 asks for this, and it is not linked; a sink all the same.
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(tokio::io::sink())
    }
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        Capture::write(self, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

/// Whether the component (its top level; nested modules and components
/// are skipped unread) imports any `wasi:*` interface.
pub(super) fn imports_wasi(bytes: &[u8]) -> Result<bool, PolicyError> {
    use wasmparser::{Chunk, Parser, Payload};
    let invalid = |e: wasmparser::BinaryReaderError| {
        PolicyError::Invalid(format!("not a valid component: {e}"))
    };
    let mut parser = Parser::new(0);
    let mut rest = bytes;
    loop {
        let Chunk::Parsed { consumed, payload } = parser.parse(rest, true).map_err(invalid)? else {
            return Err(PolicyError::Invalid(
                "not a valid component: truncated".into(),
            ));
        };
        rest = rest.get(consumed..).unwrap_or_default();
        match payload {
            Payload::ComponentImportSection(imports) => {
                for import in imports {
                    if is_wasi(import.map_err(invalid)?.name.name) {
                        return Ok(true);
                    }
                }
            }
            Payload::ModuleSection {
                unchecked_range, ..
            }
            | Payload::ComponentSection {
                unchecked_range, ..
            } => {
                rest = rest.get(unchecked_range.len()..).unwrap_or_default();
            }
            Payload::End(_) => return Ok(false),
            _ => {}
        }
    }
}

/// Log what a WASI guest wrote during `call` (capped by `policy::wasi`).
pub(super) fn log_output(store: &wasmtime::Store<Ctx>, call: &'static str) {
    let Some(wasi) = &store.data().wasi else {
        return;
    };
    let out = wasi.output();
    if !out.is_empty() {
        tracing::info!(
            call,
            stdout = %out.stdout,
            stderr = %out.stderr,
            dropped_bytes = out.dropped,
            "policy output"
        );
    }
}

#[cfg(test)]
mod tests;
