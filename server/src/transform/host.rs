//! The WebAssembly host: one engine, components compiled once and cached on disk by
//! content hash, and a fresh store per call with memory, time and output limits.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter, Store, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::wit::floe::transform::host::{Host, Level};
use super::wit::floe::transform::types::{BatchResult, TableBatch};
use super::wit::{Validator as Bindings, ValidatorPre};
use crate::config::SandboxLimits;

/// How often the epoch advances; a deadline is accurate to one tick.
const TICK: Duration = Duration::from_millis(5);
/// Guest output kept per call (stdout, stderr and log lines each).
const OUTPUT_CAP: usize = 64 * 1024;
/// Lines a call may write to floe's log, all streams together, and the length of each.
const LOG_LINES_CAP: usize = 200;
const LINE_CAP: usize = OUTPUT_CAP / 16;

/// Interfaces a validator may import: floe's own and WASI without any capability to
/// reach outside (no filesystem, sockets, HTTP or name lookups).
const ALLOWED_IMPORTS: &[&str] = &[
    "floe:transform/",
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-",
];

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read validator {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("validator is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("not a valid WebAssembly component: {0}")]
    Invalid(String),
    #[error("the component imports {0}, which validators may not use (allowed: floe:transform, wasi:io, wasi:clocks, wasi:random, wasi:cli stdio/environment/exit)")]
    ForbiddenImport(String),
    #[error("the component does not implement the floe:transform/validator world: {0}")]
    WrongWorld(String),
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(String),
}

/// Why one guest call produced no verdicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    Trap,
    Timeout,
    OutOfMemory,
    /// The guest answered, but not as the world requires.
    Contract,
}

#[derive(Debug, Clone)]
pub struct GuestFailure {
    pub kind: FailureKind,
    pub reason: String,
}

/// One engine per process, with a ticker thread driving epoch deadlines.
pub struct Runtime {
    engine: Engine,
    /// Whether the engine meters fuel; every store then needs a budget.
    metered: bool,
    linker: Linker<GuestState>,
    cache_dir: PathBuf,
    stop_ticker: Arc<AtomicBool>,
}

impl Runtime {
    /// `metered` turns on fuel accounting, which routes with `limits.fuel` need.
    pub fn new(cache_dir: &Path, metered: bool) -> Result<Self, LoadError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.consume_fuel(metered);
        let engine = Engine::new(&config).map_err(|e| LoadError::Engine(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| LoadError::Engine(e.to_string()))?;
        Bindings::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| LoadError::Engine(e.to_string()))?;
        let stop_ticker = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = stop_ticker.clone();
            std::thread::Builder::new()
                .name("floe-wasm-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| LoadError::Engine(e.to_string()))?;
        }
        Ok(Self {
            engine,
            metered,
            linker,
            cache_dir: cache_dir.to_path_buf(),
            stop_ticker,
        })
    }

    pub fn load_file(
        &self,
        name: &str,
        path: &Path,
        limits: &SandboxLimits,
    ) -> Result<Validator, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        self.load(name, &bytes, limits)
    }

    /// Checks and compiles a component, or loads the artifact compiled earlier.
    pub fn load(
        &self,
        name: &str,
        bytes: &[u8],
        limits: &SandboxLimits,
    ) -> Result<Validator, LoadError> {
        let limit = usize::try_from(limits.max_component_mib << 20).unwrap_or(usize::MAX);
        if bytes.len() > limit {
            return Err(LoadError::TooLarge {
                size: bytes.len(),
                limit,
            });
        }
        // Read before compiling: a refused upload costs a parse, and leaves no artifact.
        check_imports_before_compiling(bytes)?;
        let hash = hex::encode(Sha256::digest(bytes));
        let (component, compiled_now) = self.cached_or_compiled(&hash, bytes)?;
        for (import, _) in component.component_type().imports(&self.engine) {
            if !ALLOWED_IMPORTS.iter().any(|p| import.starts_with(p)) {
                return Err(LoadError::ForbiddenImport(import.to_string()));
            }
        }
        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(ValidatorPre::new)
            .map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
        // Only a component that passed every check is kept on disk.
        if compiled_now {
            self.store_artifact(&hash, &component);
        }
        Ok(Validator {
            name: name.into(),
            hash: hash.into(),
            pre,
            engine: self.engine.clone(),
            memory_bytes: usize::try_from(limits.memory_mib << 20).unwrap_or(usize::MAX),
            deadline_ticks: (limits.deadline_ms * 1000).div_ceil(TICK.as_micros() as u64) + 1,
            deadline: Duration::from_millis(limits.deadline_ms),
            fuel: self.metered.then(|| limits.fuel.unwrap_or(u64::MAX)),
            captured: std::sync::Mutex::new(None),
        })
    }

    /// The artifact's name carries what makes it valid: the content and the engine's
    /// compatibility fingerprint (wasmtime version and settings). wasmtime also refuses an
    /// artifact another version built.
    fn artifact_path(&self, hash: &str) -> PathBuf {
        self.cache_dir.join(format!(
            "{hash}-{:016x}.cwasm",
            engine_fingerprint(&self.engine)
        ))
    }

    /// The component from its cached artifact, or compiled now (then `true`).
    fn cached_or_compiled(&self, hash: &str, bytes: &[u8]) -> Result<(Component, bool), LoadError> {
        let artifact = self.artifact_path(hash);
        if artifact.exists() {
            // SAFETY: floe wrote this file itself from a component it compiled; artifacts
            // are never accepted from users.
            match unsafe { Component::deserialize_file(&self.engine, &artifact) } {
                Ok(c) => return Ok((c, false)),
                Err(e) => {
                    tracing::warn!(artifact = %artifact.display(), error = %e, "recompiling unusable artifact")
                }
            }
        }
        let started = std::time::Instant::now();
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        tracing::info!(
            hash = &hash[..12],
            bytes = bytes.len(),
            ms = started.elapsed().as_millis() as u64,
            "compiled validator"
        );
        Ok((component, true))
    }

    fn store_artifact(&self, hash: &str, component: &Component) {
        let artifact = self.artifact_path(hash);
        match component.serialize() {
            Ok(serialized) => {
                let tmp = artifact.with_extension("tmp");
                let written = std::fs::create_dir_all(&self.cache_dir)
                    .and_then(|_| std::fs::write(&tmp, serialized))
                    .and_then(|_| std::fs::rename(&tmp, &artifact));
                if let Err(e) = written {
                    tracing::warn!(dir = %self.cache_dir.display(), error = %e, "cannot cache compiled validator");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot serialize compiled validator"),
        }
    }
}

fn engine_fingerprint(engine: &Engine) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.finish()
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

/// A loaded validator, ready to be instantiated once per call.
pub struct Validator {
    pub name: Arc<str>,
    /// SHA-256 of the component, hex.
    pub hash: Arc<str>,
    pre: ValidatorPre<GuestState>,
    engine: Engine,
    memory_bytes: usize,
    deadline_ticks: u64,
    deadline: Duration,
    /// The fuel budget per call, when the engine meters fuel.
    fuel: Option<u64>,
    /// When set, guest output lines are also kept here (dry runs show them).
    captured: std::sync::Mutex<Option<Vec<String>>>,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            .field("name", &self.name)
            .field("hash", &self.hash)
            .finish()
    }
}

impl Validator {
    /// From now on, keep the guest's output lines for `take_output`.
    pub fn capture_output(&self) {
        if let Ok(mut c) = self.captured.lock() {
            c.get_or_insert_with(Vec::new);
        }
    }

    /// The output lines kept since `capture_output`.
    pub fn take_output(&self) -> Vec<String> {
        self.captured
            .lock()
            .ok()
            .and_then(|mut c| c.as_mut().map(std::mem::take))
            .unwrap_or_default()
    }

    /// One guest call in a fresh store: an instance that trapped is never re-entered.
    pub fn call(&self, batch: &TableBatch) -> Result<BatchResult, GuestFailure> {
        let stdout = MemoryOutputPipe::new(OUTPUT_CAP);
        let stderr = MemoryOutputPipe::new(OUTPUT_CAP);
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build();
        let state = GuestState {
            wasi,
            table: ResourceTable::new(),
            memory_bytes: self.memory_bytes,
            memory_used: 0,
            memory_exceeded: false,
            log: Vec::new(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| s);
        store.set_epoch_deadline(self.deadline_ticks);
        store.epoch_deadline_trap();
        if let Some(fuel) = self.fuel {
            // Cannot fail: the engine meters fuel whenever a budget is set.
            let _ = store.set_fuel(fuel);
        }
        let result = self
            .pre
            .instantiate(&mut store)
            .and_then(|instance| instance.call_validate(&mut store, batch));
        let output = guest_lines(
            std::mem::take(&mut store.data_mut().log),
            &[
                ("stdout", &stdout.contents()),
                ("stderr", &stderr.contents()),
            ],
        );
        if let Ok(Some(kept)) = self.captured.lock().as_deref_mut() {
            kept.extend(
                output
                    .iter()
                    .map(|(level, line)| format!("{level:?}: {line}")),
            );
        }
        for (level, line) in &output {
            match level {
                Level::Error => tracing::error!(validator = %self.name, "{line}"),
                Level::Warn => tracing::warn!(validator = %self.name, "{line}"),
                Level::Info => tracing::info!(validator = %self.name, "{line}"),
                Level::Debug => tracing::debug!(validator = %self.name, "{line}"),
            }
        }
        result.map_err(|e| {
            let trap = e.downcast_ref::<Trap>();
            let (kind, what) = if store.data().memory_exceeded {
                let what = format!("exceeded its memory limit of {} bytes", self.memory_bytes);
                (FailureKind::OutOfMemory, what)
            } else if trap == Some(&Trap::Interrupt) {
                let what = format!("exceeded its deadline of {:?}", self.deadline);
                (FailureKind::Timeout, what)
            } else if trap == Some(&Trap::OutOfFuel) {
                let what = format!("ran out of fuel ({} units)", self.fuel.unwrap_or(0));
                (FailureKind::Timeout, what)
            } else {
                (FailureKind::Trap, format!("trapped: {}", root_cause(&e)))
            };
            // The last lines the guest wrote usually say why (a panic message, say).
            let tail: Vec<&str> = output
                .iter()
                .rev()
                .take(3)
                .map(|(_, l)| l.as_str())
                .collect();
            let reason = if tail.is_empty() {
                format!("validator {} {what}", self.name)
            } else {
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!(
                    "validator {} {what}; guest output: {}",
                    self.name,
                    tail.join(" | ")
                )
            };
            GuestFailure { kind, reason }
        })
    }
}

/// A call's output as the lines floe logs: the guest's log lines, then its stdout and
/// stderr, at most [`LOG_LINES_CAP`] in all (then one line saying how many were dropped),
/// each at most [`LINE_CAP`] bytes, with control characters escaped so that a guest cannot
/// forge or garble a line of floe's log.
fn guest_lines(log: Vec<(Level, String)>, streams: &[(&str, &[u8])]) -> Vec<(Level, String)> {
    let written = streams.iter().map(|(name, bytes)| {
        let text = String::from_utf8_lossy(bytes).into_owned();
        let lines: Vec<(Level, String)> = text
            .lines()
            .map(|l| (Level::Info, format!("{name}: {l}")))
            .collect();
        lines
    });
    let all = log.into_iter().chain(written.flatten());
    let mut kept = Vec::new();
    let mut dropped = 0usize;
    for (level, line) in all {
        if kept.len() < LOG_LINES_CAP {
            kept.push((level, clip(escape_controls(&line), LINE_CAP)));
        } else {
            dropped += 1;
        }
    }
    if dropped > 0 {
        kept.push((
            Level::Warn,
            format!("{dropped} more lines of guest output dropped"),
        ));
    }
    kept
}

fn escape_controls(line: &str) -> String {
    line.chars()
        .flat_map(|c| {
            let escape = c.is_control() && c != '\t';
            let shown: Vec<char> = if escape {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            shown
        })
        .collect()
}

/// Refuses a component whose own imports (not those of the modules and components nested
/// in it, which it satisfies itself) name an interface outside [`ALLOWED_IMPORTS`].
/// Anything that does not parse is left to the compiler, which says what is wrong.
fn check_imports_before_compiling(bytes: &[u8]) -> Result<(), LoadError> {
    use wasmparser::{Parser, Payload};
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        let Ok(payload) = payload else {
            return Ok(());
        };
        match payload {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(imports) if depth == 0 => {
                for import in imports {
                    let Ok(import) = import else {
                        return Ok(());
                    };
                    let name = import.name.name;
                    // Interfaces are named `ns:package/…`; plain names are the world's own
                    // types and functions, which instantiation checks.
                    let interface = name.contains(':');
                    if interface && !ALLOWED_IMPORTS.iter().any(|p| name.starts_with(p)) {
                        return Err(LoadError::ForbiddenImport(name.to_string()));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Cuts `text` to at most `max` bytes on a character boundary.
pub fn clip(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

fn root_cause(e: &wasmtime::Error) -> String {
    match e.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => e.root_cause().to_string(),
    }
}

/// What one call may create: a component holds a few core instances, memories and tables
/// (a language runtime's several modules); wasmtime's defaults allow 10,000 of each.
const MAX_INSTANCES: usize = 64;
const MAX_MEMORIES: usize = 16;
const MAX_TABLES: usize = 64;

struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// The call's memory budget, over all its linear memories together.
    memory_bytes: usize,
    memory_used: usize,
    memory_exceeded: bool,
    log: Vec<(Level, String)>,
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl ResourceLimiter for GuestState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self
            .memory_used
            .saturating_sub(current)
            .saturating_add(desired);
        if total > self.memory_bytes {
            self.memory_exceeded = true;
            wasmtime::bail!("memory limit of {} bytes exceeded", self.memory_bytes);
        }
        self.memory_used = total;
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl Host for GuestState {
    fn log(&mut self, level: Level, message: String) {
        // One line more than kept, so that the count of dropped lines shows there were more.
        if self.log.len() <= LOG_LINES_CAP {
            self.log.push((level, clip(message, LINE_CAP)));
        }
    }
}

impl super::wit::floe::transform::types::Host for GuestState {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_limit_holds_for_all_of_a_calls_memories_together() {
        let mut state = GuestState {
            wasi: WasiCtxBuilder::new().build(),
            table: ResourceTable::new(),
            memory_bytes: 10 << 20,
            memory_used: 0,
            memory_exceeded: false,
            log: Vec::new(),
        };
        // Three memories of 3 MiB each fit a 10 MiB budget; a fourth does not.
        for _ in 0..3 {
            assert!(state.memory_growing(0, 3 << 20, None).unwrap());
        }
        assert!(state.memory_growing(0, 3 << 20, None).is_err());
        assert!(state.memory_exceeded);
        // Growing one of them counts only what it adds.
        state.memory_exceeded = false;
        assert!(state.memory_growing(3 << 20, 4 << 20, None).unwrap());
        assert!(state.memory_growing(4 << 20, 5 << 20, None).is_err());
        assert!(state.memories() < 10_000 && state.instances() < 10_000);
    }

    #[test]
    fn guest_output_is_bounded_and_cannot_forge_log_lines() {
        // 65,536 one-character lines on stdout: a flood of log lines.
        let flood = "x\n".repeat(1 << 16);
        let lines = guest_lines(
            vec![(Level::Info, "line\r\u{1b}[2Jforged".into())],
            &[("stdout", flood.as_bytes()), ("stderr", b"")],
        );
        assert_eq!(lines.len(), LOG_LINES_CAP + 1);
        assert_eq!(lines[0].1, "line\\r\\u{1b}[2Jforged");
        assert_eq!(lines[1].1, "stdout: x");
        assert_eq!(
            lines[LOG_LINES_CAP].1,
            format!(
                "{} more lines of guest output dropped",
                (1 << 16) + 1 - LOG_LINES_CAP
            )
        );
        let long = "y".repeat(3 * LINE_CAP);
        let lines = guest_lines(Vec::new(), &[("stderr", long.as_bytes())]);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].1.len(), LINE_CAP);
    }
}
