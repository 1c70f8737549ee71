//! Executes a Dockerfile: resolves arguments and the stage graph, then walks
//! each needed stage's instructions in order.
//!
//! Each stage owns a real root filesystem directory (its base image's
//! layers applied). Metadata instructions (ENV, LABEL, USER, …) edit the
//! image config; COPY and ADD change the root filesystem through
//! [`crate::copy`] and the changed paths become a layer through
//! [`crate::snapshot`] and kiln-image's streaming layer writer.
//!
//! Caching: every step that can change the root filesystem (COPY, ADD,
//! RUN, WORKDIR) has a key ([`crate::cache`]) computed before it runs from
//! its parent's key and its own inputs. A hit takes the recorded layer and
//! history entry without touching the disk: a stage's root filesystem is
//! only materialized (its layers applied) when a step actually has to run,
//! so a build whose every step hits never unpacks anything. Metadata
//! instructions take the time of the latest step before them, so a rebuild
//! that changes nothing produces the same image digest.
//!
//! Overlap: a step's layer is compressed and hashed by a background thread
//! while the next step runs ([`PendingLayer`]); it is settled (added to the
//! stage, uploaded, recorded in the caches) before anything changes the
//! root filesystem it reads.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use kiln_context::Context;
use kiln_dockerfile::ast::{
    ArgDecl, Command, CopyAdd, Dockerfile, Healthcheck, Instruction, InstructionKind, Span,
};
use kiln_dockerfile::expand::{expand_heredoc, expand_word, Vars};
use kiln_image::{
    BlobStore, Compression, Format, History, Image, ImageConfig, Layer, LayerOptions, Platform,
    StoredImage,
};

use crate::cache::{hash_tree, CacheBackend, KeyBuilder, StatCache, StepRecord};
use crate::copy::{AddOptions, CopyRequest};
use crate::fetch::HttpFetcher;
use crate::graph::{self, Base, Graph};
use crate::progress::{Progress, StepOutcome};
use crate::BuildError;

/// How the layers of stages outside the image are written. They only live
/// in the cache, so speed matters more than size:
/// - kept on this machine only, they are not compressed at all: one pass
///   reading the files and one hash, the way other builders keep such
///   stages as plain directories (multistage-c's 340 MB toolchain layer:
///   0.4 s less on the build's critical path than zstd level 1);
/// - when the build exports them (`--cache-to …,mode=max`, or pushes to
///   `--cache-repo`), they travel, so zstd level 1: about half the bytes,
///   still several times faster than gzip.
///
/// An image that later reuses such a layer re-encodes it (same diffID).
pub fn intermediate_compression(cache_leaves_machine: bool) -> Compression {
    if cache_leaves_machine {
        Compression::Zstd { level: 1 }
    } else {
        Compression::None
    }
}

/// The PATH BuildKit gives a Linux image that has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Resolves `FROM` and `COPY --from` image references to images in the
/// blob store. The build crate handles local OCI layouts and archives; the
/// CLI adds registries.
pub trait ImageResolver: Sync {
    /// Returns the stored image for `reference` and `platform`, or `None`
    /// when this resolver does not handle the reference's kind.
    fn resolve(
        &self,
        store: &BlobStore,
        reference: &str,
        platform: &Platform,
    ) -> Result<Option<StoredImage>, BuildError>;
}

/// Resolves `oci-layout://DIR[:ref|@digest]` and `oci-archive:FILE[:ref]`.
pub struct LocalImages;

impl ImageResolver for LocalImages {
    fn resolve(
        &self,
        store: &BlobStore,
        reference: &str,
        platform: &Platform,
    ) -> Result<Option<StoredImage>, BuildError> {
        if let Some(rest) = reference.strip_prefix("oci-layout://") {
            let (path, tag) = split_local_ref(rest);
            return Ok(Some(kiln_image::import_oci_layout(
                store,
                Path::new(path),
                tag,
                platform,
            )?));
        }
        if let Some(rest) = reference
            .strip_prefix("oci-archive://")
            .or_else(|| reference.strip_prefix("oci-archive:"))
        {
            let (path, tag) = split_local_ref(rest);
            return Ok(Some(kiln_image::import_oci_archive(
                store,
                Path::new(path),
                tag,
                platform,
            )?));
        }
        Ok(None)
    }
}

/// Splits `path[:ref]` / `path@sha256:…`: the reference is what follows the
/// last `@`, or the last `:` after the final `/`.
fn split_local_ref(s: &str) -> (&str, Option<&str>) {
    if let Some((path, digest)) = s.rsplit_once('@') {
        return (path, Some(digest));
    }
    let last_slash = s.rfind('/').map(|i| i + 1).unwrap_or(0);
    match s[last_slash..].rfind(':') {
        Some(i) => (&s[..last_slash + i], Some(&s[last_slash + i + 1..])),
        None => (s, None),
    }
}

/// Everything a build needs.
pub struct BuildRequest<'a> {
    /// Display name of the Dockerfile in errors.
    pub dockerfile_name: String,
    pub dockerfile: String,
    pub context: &'a Context,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub platform: Platform,
    pub build_platform: Platform,
    pub labels: BTreeMap<String, String>,
    pub store: &'a BlobStore,
    /// Scratch space for stage root filesystems; removed afterwards.
    pub work_dir: PathBuf,
    pub compression: Compression,
    /// How layers of stages outside the image are written (see
    /// [`intermediate_compression`]).
    pub intermediate_compression: Compression,
    pub format: Format,
    /// SOURCE_DATE_EPOCH: fixes `created` and clamps file times.
    pub source_date_epoch: Option<i64>,
    pub resolver: &'a dyn ImageResolver,
    pub http: &'a HttpFetcher,
    pub progress: &'a dyn Progress,
    /// How RUN steps are isolated (`Auto` probes once per build).
    pub isolation: kiln_sandbox::Isolation,
    /// Secrets for `RUN --mount=type=secret`, by id.
    pub secrets: BTreeMap<String, crate::run::SecretSource>,
    /// SSH agent sockets for `RUN --mount=type=ssh`, by id.
    pub ssh: BTreeMap<String, PathBuf>,
    /// Where `RUN --mount=type=cache` directories persist between builds.
    pub mount_cache_dir: PathBuf,
    /// Where step results are looked up (in order) and stored; empty: every
    /// step runs.
    pub cache: Vec<&'a dyn CacheBackend>,
    /// Digests of context files by their stat data.
    pub stat_cache: &'a StatCache,
    /// How many stages may build at once (0: one per CPU).
    pub jobs: usize,
    /// In-place builds: paths never touched (Kaniko's `--ignore-path`).
    pub ignore_paths: Vec<PathBuf>,
    /// Allow an in-place build where nothing shows kiln is in a container
    /// (Kaniko's `--force`).
    pub force_in_place: bool,
    /// The `security.insecure` entitlement (`--allow security.insecure`):
    /// without it `RUN --security=insecure` is an error.
    pub allow_insecure: bool,
    /// Called with each layer of the target image as soon as it is in the
    /// store (written or taken from a cache), so uploads can overlap the
    /// steps that follow.
    pub on_layer: Option<&'a (dyn Fn(&Layer) + Sync)>,
    /// Where stage root filesystems are kept between builds
    /// ([`crate::snapshots`]); `None` keeps none.
    pub snapshot_dir: Option<PathBuf>,
    /// Use kept snapshots (`false` with `--no-cache`: they are still made).
    pub reuse_snapshots: bool,
}

/// A step result the build used or produced, for exporting a cache.
#[derive(Debug, Clone)]
pub struct CacheEntry {
    pub key: String,
    pub record: StepRecord,
    /// The step belongs to the target stage's chain (what `mode=min`
    /// exports).
    pub in_target: bool,
}

/// The built image.
#[derive(Debug, Clone)]
pub struct BuildOutput {
    pub image: Image,
    pub stored: StoredImage,
    /// Build args given but never declared (BuildKit warns about them).
    pub unused_args: Vec<String>,
    /// Lint warnings on the stages built (BuildKit's checks, e.g.
    /// `SecretsUsedInArgOrEnv`), in file order.
    pub lint_warnings: Vec<kiln_dockerfile::lint::Warning>,
    /// Every keyed step of the build, in order.
    pub cache_entries: Vec<CacheEntry>,
    /// Steps taken from a cache, and steps that ran.
    pub cache_hits: usize,
    pub cache_misses: usize,
    /// `RUN --mount=type=cache` directories the build used: (id, dir).
    pub cache_mounts: Vec<(String, PathBuf)>,
}

/// The variables an instruction sees: ENV of the stage wins over ARGs.
pub(crate) struct StageVars<'a> {
    pub(crate) env: &'a [String],
    pub(crate) args: &'a BTreeMap<String, String>,
}

impl Vars for StageVars<'_> {
    fn get(&self, name: &str) -> Option<String> {
        for kv in self.env.iter().rev() {
            if let Some((k, v)) = kv.split_once('=') {
                if k == name {
                    return Some(v.to_string());
                }
            }
        }
        self.args.get(name).cloned()
    }
}

struct MapVars<'a>(&'a BTreeMap<String, String>);

impl Vars for MapVars<'_> {
    fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

/// A finished stage: its image and its root filesystem on disk.
pub(crate) struct StageResult {
    pub(crate) image: Image,
    /// The stage's root filesystem: its first `applied` layers are on disk;
    /// the rest are applied when something reads it ([`Executor::stage_root`]).
    pub(crate) rootfs: PathBuf,
    pub(crate) applied: std::sync::Mutex<usize>,
    /// The cache key of the stage's last step.
    pub(crate) key: String,
    /// The stage's ARG values at its end: a stage built `FROM` this one
    /// starts with them, as in Docker's builder (where ARGs live in the
    /// build state's environment, which a derived stage inherits).
    pub(crate) args: BTreeMap<String, String>,
    /// The stage's last layers, still being written, handed to the one
    /// stage built `FROM` it ([`Executor::hands_over`]): it settles them,
    /// so it can start while they are compressed. `image.layers` holds
    /// only the settled ones.
    pub(crate) handoff: Mutex<std::collections::VecDeque<PendingLayer>>,
}

/// The state of the stage being built.
pub(crate) struct StageState {
    pub(crate) index: usize,
    /// How many of `layers` are applied to `rootfs` ([`Executor::ensure_rootfs`]).
    pub(crate) applied: usize,
    /// The cache key of the last step that can change the filesystem.
    pub(crate) key: String,
    pub(crate) rootfs: PathBuf,
    pub(crate) config: ImageConfig,
    pub(crate) layers: Vec<Layer>,
    pub(crate) args: BTreeMap<String, String>,
    pub(crate) cmd_set: bool,
    /// The last steps' layers while they are still being written
    /// (compressed and hashed) by background threads, oldest first; see
    /// [`Executor::settle`].
    pub(crate) pending: std::collections::VecDeque<PendingLayer>,
    /// The running step's layer, settled before the step was remembered.
    pub(crate) unrecorded: Option<Layer>,
    /// (number of layers, cache key) of each filesystem state the stage
    /// went through: the names its snapshots would have.
    pub(crate) states: Vec<(usize, String)>,
    /// Nothing after the running step needs the stage's files (it is the
    /// image's stage and its last step that changes files), so a COPY may
    /// make its layer straight from the context ([`crate::copy::plan`]).
    pub(crate) last_files_step: bool,
    /// Snapshots of the root being linked in the background, each taken
    /// before a COPY that only writes entries of one directory, which they
    /// take as it was ([`Executor::snapshot_before_context_step`]).
    /// Anything else that changes the root waits for them
    /// ([`Executor::join_snapshots`]).
    pub(crate) snapshotting: Vec<SnapshotJob>,
}

/// A snapshot of a stage root linked on a background thread.
pub(crate) struct SnapshotJob {
    thread: std::thread::JoinHandle<()>,
    /// The directory whose entries the step that followed it writes
    /// (`None`: a copy of the whole root, which nothing may change).
    frozen: Option<crate::snapshots::Frozen>,
}

/// A layer whose writer runs while the next steps do. Its files are on
/// the stage's root filesystem, and none of them changes until the layer
/// is settled: a RUN reads that root only as its overlay's lower directory
/// and merges its own changes after settling; WORKDIR and a cache hit
/// settle first; a COPY settles first unless it writes none of the files
/// (then its layer queues up behind: layers are settled in step order).
pub(crate) struct PendingLayer {
    writer: std::thread::JoinHandle<kiln_image::Result<Layer>>,
    /// The progress id of the step that made it.
    step: usize,
    /// That step's cache key, once [`Executor::remember`] has it.
    key: Option<String>,
    /// That step's history entry.
    history: Option<History>,
    /// Whether its files are in the stage root.
    on_disk: bool,
    /// The stage-root files it reads (when `on_disk`).
    files: HashSet<PathBuf>,
    /// The stage whose step made it (a stage built `FROM` that one may
    /// settle it).
    stage: usize,
    /// Files of `files` that a later step replaced or deleted, and the
    /// hard link kept to each for the writer, which opens a file only
    /// while holding this lock ([`Executor::keep_for_writers`]).
    moved: Arc<Mutex<HashMap<PathBuf, PathBuf>>>,
}

/// `os/arch[/variant]` (as `FROM --platform=` gives it).
fn parse_platform(s: &str) -> Option<Platform> {
    let mut parts = s.split('/');
    let os = parts.next().filter(|p| !p.is_empty())?;
    let arch = parts.next().filter(|p| !p.is_empty())?;
    let variant = parts.next().map(str::to_string);
    if parts.next().is_some() {
        return None;
    }
    Some(Platform {
        os: os.to_string(),
        architecture: arch.to_string(),
        variant,
        ..Platform::default()
    })
}

fn platform_string(p: &Platform) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{}", p.os, p.architecture, v),
        None => format!("{}/{}", p.os, p.architecture),
    }
}

/// The automatic platform ARGs (BUILDPLATFORM, TARGETARCH, …).
pub fn platform_args(target: &Platform, build: &Platform) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for (prefix, p) in [("TARGET", target), ("BUILD", build)] {
        m.insert(format!("{prefix}PLATFORM"), platform_string(p));
        m.insert(format!("{prefix}OS"), p.os.clone());
        m.insert(format!("{prefix}ARCH"), p.architecture.clone());
        m.insert(
            format!("{prefix}VARIANT"),
            p.variant.clone().unwrap_or_default(),
        );
    }
    m
}

/// Proxy ARGs usable without an ARG instruction, as in BuildKit.
const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

fn rfc3339(epoch: i64) -> String {
    // Civil-from-days (proleptic Gregorian), so kiln needs no date crate
    // for this one formatting job.
    let days = epoch.div_euclid(86_400);
    let secs = epoch.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        (secs % 3600) / 60,
        secs % 60
    )
}

fn now_epoch() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Holds the file name and text so errors found at build time can point
/// at the line.
pub(crate) struct Locator<'a> {
    file: &'a str,
    text: &'a str,
}

impl Locator<'_> {
    pub(crate) fn at(&self, span: Span, message: impl Into<String>) -> BuildError {
        BuildError::At {
            file: self.file.to_string(),
            line: span.line,
            column: span.column,
            source_line: self
                .text
                .lines()
                .nth(span.line.saturating_sub(1))
                .unwrap_or("")
                .to_string(),
            message: message.into(),
        }
    }

    /// Attaches file and line to an error raised without them.
    fn locate(&self, span: Span, err: BuildError) -> BuildError {
        match err {
            BuildError::Instruction {
                line,
                column,
                message,
            } => self.at(Span { line, column }, message),
            e @ BuildError::At { .. } => e,
            e @ BuildError::Parse(_) => e,
            other => self.at(span, other.to_string()),
        }
    }
}

/// Builds the target stage of a Dockerfile into an image in the store.
pub fn build(req: &BuildRequest) -> Result<BuildOutput, BuildError> {
    let df = kiln_dockerfile::parse(&req.dockerfile_name, &req.dockerfile)?;
    let loc = Locator {
        file: &req.dockerfile_name,
        text: &req.dockerfile,
    };
    let escape = df.directives.escape;
    let predefined = platform_args(&req.platform, &req.build_platform);
    let mut consumed: BTreeSet<String> = BTreeSet::new();

    // Global ARGs: visible to FROM lines and as defaults for stage ARGs.
    let mut global: BTreeMap<String, String> = predefined.clone();
    let mut global_declared: BTreeMap<String, String> = BTreeMap::new();
    for ins in df.global_args() {
        if let InstructionKind::Arg(decls) = &ins.kind {
            for decl in decls {
                consumed.insert(decl.name.clone());
                let value = match req.build_args.get(&decl.name) {
                    Some(v) => Some(v.clone()),
                    None => match &decl.default {
                        Some(d) => Some(
                            expand_word(d, &MapVars(&global), escape)
                                .map_err(|e| loc.at(ins.span, format!("ARG: {}", e.message)))?
                                .value,
                        ),
                        None => None,
                    },
                };
                if let Some(v) = value {
                    global.insert(decl.name.clone(), v.clone());
                    global_declared.insert(decl.name.clone(), v);
                }
            }
        }
    }

    let graph = graph::resolve(&df, &MapVars(&global), req.target.as_deref())
        .map_err(|e| loc.locate(Span { line: 1, column: 1 }, e))?;
    let lint_warnings = kiln_dockerfile::lint::lint_stages(&df, |i| graph.order.contains(&i));
    let stage_names: Vec<String> = df
        .stages()
        .iter()
        .map(|s| {
            s.from
                .name
                .clone()
                .unwrap_or_else(|| format!("stage-{}", s.index))
        })
        .collect();

    let started = Instant::now();
    std::fs::create_dir_all(&req.work_dir).map_err(|source| BuildError::Io {
        path: req.work_dir.clone(),
        source,
    })?;
    // Stage roots and RUN scratch dirs are made here: each starts in block
    // groups of its own.
    crate::placement::spread_subtrees(&req.work_dir);
    let stages = df.stages();
    let (isolation, in_place) = decide_isolation(req, &graph, &stages)?;
    let shared = Shared {
        step_id: AtomicUsize::new(0),
        image_roots: Mutex::new(HashMap::new()),
        image_digests: Mutex::new(HashMap::new()),
        isolation: Mutex::new(isolation),
        resolved: Mutex::new(HashMap::new()),
        base_locks: Mutex::new(HashMap::new()),
        deferred: Mutex::new(Vec::new()),
        target_chain: graph.base_chain(graph.target),
        snapshots: match (&req.snapshot_dir, &in_place) {
            (Some(dir), None) => Some(crate::snapshots::Snapshots::new(
                dir.clone(),
                req.work_dir.join("discarded"),
                req.reuse_snapshots,
            )),
            _ => None,
        },
        in_place,
    };
    // Every image the needed stages name (for the platform each is pulled
    // for), pulled in the background while the first stages run.
    let mut prefetch: Vec<(String, Platform)> = graph
        .order
        .iter()
        .filter_map(|i| graph.stages.get(*i))
        .flat_map(|n| {
            let base = match &n.base {
                Base::Image(r) => {
                    let platform = match &n.platform {
                        Some(p) => parse_platform(p),
                        None => Some(req.platform.clone()),
                    };
                    platform.map(|p| (r.clone(), p))
                }
                _ => None,
            };
            base.into_iter().chain(
                n.image_sources
                    .iter()
                    .map(|r| (r.clone(), req.platform.clone())),
            )
        })
        .collect();
    prefetch.sort_by_key(|(r, p)| (r.clone(), platform_string(p)));
    prefetch.dedup_by_key(|(r, p)| (r.clone(), platform_string(p)));
    // One root filesystem in place: one stage at a time.
    let jobs = match req.jobs {
        _ if shared.in_place.is_some() => 1,
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        n => n,
    }
    .min(graph.order.len())
    .max(1);
    let schedule = Mutex::new(Schedule::default());
    let wake = Condvar::new();

    // Each worker takes the first stage (in build order) whose inputs are
    // all built, builds it, and publishes the result; independent stages
    // thus build at the same time, up to `jobs`.
    let worker = || loop {
        let (index, ready) = {
            let Ok(mut s) = schedule.lock() else { return };
            loop {
                if s.error.is_some() || s.started.len() == graph.order.len() {
                    return;
                }
                let next = graph.order.iter().copied().find(|i| {
                    !s.started.contains(i)
                        && graph
                            .stages
                            .get(*i)
                            .is_some_and(|n| n.deps.iter().all(|d| s.done.contains_key(d)))
                });
                if let Some(i) = next {
                    s.started.insert(i);
                    s.running += 1;
                    break (i, s.done.clone());
                }
                if s.running == 0 {
                    s.error = Some(BuildError::Message(
                        "the stages' dependencies form a cycle".into(),
                    ));
                    wake.notify_all();
                    return;
                }
                s = match wake.wait(s) {
                    Ok(g) => g,
                    Err(_) => return,
                };
            }
        };
        let mut exec = Executor {
            req,
            df: &df,
            loc: &loc,
            graph: &graph,
            global_declared: &global_declared,
            predefined: &predefined,
            consumed: BTreeSet::new(),
            shared: &shared,
            entries: Vec::new(),
            hits: 0,
            misses: 0,
            cache_mounts: BTreeMap::new(),
        };
        let result = match stages.get(index) {
            Some(stage) => {
                let name = stage_names
                    .get(index)
                    .cloned()
                    .unwrap_or_else(|| format!("stage-{index}"));
                exec.run_stage(
                    index,
                    &name,
                    stage.from_instruction,
                    stage.instructions,
                    &ready,
                )
            }
            None => Err(BuildError::NoStages),
        };
        let Ok(mut s) = schedule.lock() else { return };
        s.running -= 1;
        match result {
            Ok(r) => {
                s.done.insert(index, Arc::new(r));
                s.consumed.extend(exec.consumed);
                s.entries.insert(index, exec.entries);
                s.hits += exec.hits;
                s.misses += exec.misses;
                s.cache_mounts.extend(exec.cache_mounts);
            }
            Err(e) => {
                if s.error.is_none() {
                    s.error = Some(e);
                }
            }
        }
        wake.notify_all();
    };
    std::thread::scope(|scope| {
        for (reference, platform) in &prefetch {
            let shared = &shared;
            scope.spawn(move || {
                // Errors surface (with their Dockerfile line) when the
                // stage itself resolves the image.
                if let Err(e) = resolve_once(req, shared, reference, platform) {
                    tracing::debug!("prefetch of {reference} failed: {e}");
                }
            });
        }
        for _ in 1..jobs {
            scope.spawn(worker);
        }
        worker();
    });
    let mut schedule = schedule
        .into_inner()
        .map_err(|_| BuildError::Message("a build worker panicked".into()))?;
    // Layers a stage handed to one that never ran (the build failed) are
    // waited for, so no writer outlives the build.
    for r in schedule.done.values() {
        if let Ok(mut q) = r.handoff.lock() {
            for p in q.drain(..) {
                let _ = p.writer.join();
            }
        }
    }
    // Layers of stages outside the image, written while later stages ran:
    // waited for (before any stage root moves) and recorded.
    let deferred = shared
        .deferred
        .lock()
        .map(|mut d| std::mem::take(&mut *d))
        .unwrap_or_default();
    for p in deferred {
        let layer = match p.writer.join() {
            Ok(Ok(layer)) => layer,
            Ok(Err(e)) => {
                req.progress.info(&format!(
                    "warning: a layer of a stage outside the image could not be written for the cache: {e}"
                ));
                continue;
            }
            Err(_) => continue,
        };
        req.progress.step_info(
            p.step,
            &format!("layer {} ({} bytes)", layer.digest, layer.size),
        );
        let (Some(key), Some(history)) = (p.key, p.history) else {
            continue;
        };
        let record = StepRecord {
            layer: Some(layer),
            history,
        };
        put_record(req, &key, &record);
        schedule
            .entries
            .entry(p.stage)
            .or_default()
            .push((p.stage, key, record));
    }
    if let Some(e) = schedule.error.take() {
        return Err(e);
    }
    consumed.extend(std::mem::take(&mut schedule.consumed));
    let target = schedule
        .done
        .remove(&graph.target)
        .ok_or(BuildError::NoStages)?;
    let target_stages = graph.base_chain(graph.target);
    let (hits, misses) = (schedule.hits, schedule.misses);
    let cache_entries = graph
        .order
        .iter()
        .filter_map(|i| schedule.entries.remove(i))
        .flatten()
        .map(|(stage, key, record)| CacheEntry {
            in_target: target_stages.contains(&stage),
            key,
            record,
        })
        .collect();
    if let Err(e) = req.stat_cache.save() {
        tracing::warn!("could not save the context stat cache: {e}");
    }
    // Each stage's finished root, whole, is kept for the next build.
    if let Some(snaps) = &shared.snapshots {
        for r in schedule.done.values().chain(std::iter::once(&target)) {
            let whole = r
                .applied
                .lock()
                .is_ok_and(|n| *n > 0 && *n == r.image.layers.len());
            if whole {
                snaps.keep_moved(&r.key, &r.rootfs);
            }
        }
    }
    let mut image = target.image.clone();
    for (k, v) in &req.labels {
        image.config.config.labels.insert(k.clone(), v.clone());
    }
    let stored = kiln_image::store_image(req.store, &image, req.format)?;
    let unused_args = req
        .build_args
        .keys()
        .filter(|k| !consumed.contains(*k) && !PROXY_ARGS.contains(&k.as_str()))
        .cloned()
        .collect();
    req.progress.info(&format!(
        "built {} in {:.2}s: {} layer(s), image {}",
        stage_names
            .get(graph.target)
            .map(String::as_str)
            .unwrap_or("image"),
        started.elapsed().as_secs_f64(),
        image.layers.len(),
        stored.manifest.digest
    ));
    if !req.cache.is_empty() {
        req.progress.info(&format!(
            "cache: {hits} step(s) reused, {misses} step(s) ran"
        ));
    }
    Ok(BuildOutput {
        image,
        stored,
        unused_args,
        lint_warnings,
        cache_entries,
        cache_hits: hits,
        cache_misses: misses,
        cache_mounts: std::mem::take(&mut schedule.cache_mounts)
            .into_iter()
            .collect(),
    })
}

/// Stages already built, shared with the stages that read them.
pub(crate) type Results = HashMap<usize, Arc<StageResult>>;

/// What stages building at the same time share.
struct Shared {
    step_id: AtomicUsize,
    image_roots: Mutex<HashMap<String, PathBuf>>,
    image_digests: Mutex<HashMap<String, String>>,
    isolation: Mutex<Option<kiln_sandbox::Isolation>>,
    /// Set when steps run in kiln's own container root.
    in_place: Option<crate::inplace::InPlaceRoot>,
    /// Images resolved so far, by reference ([`resolve_once`]).
    resolved: Mutex<HashMap<String, ResolvedSlot>>,
    /// The stages whose layers make up the target image.
    target_chain: BTreeSet<usize>,
    /// Stage roots kept between builds (not in place).
    snapshots: Option<crate::snapshots::Snapshots>,
    /// One lock per base image state: stages on the same base that start
    /// together unpack it once; the others take the kept copy.
    base_locks: Mutex<HashMap<String, Arc<crate::snapshots::Gate>>>,
    /// Layers of stages outside the image, still being written when their
    /// stage ended ([`Executor::defers`]): joined and recorded at the end
    /// of the build.
    deferred: Mutex<Vec<PendingLayer>>,
}

type ResolvedSlot = Arc<Mutex<Option<(Image, String)>>>;

/// Names the links [`Executor::keep_for_writers`] makes.
static KEPT_FOR_WRITERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The scheduler's view: which stages are done, started, or failed.
#[derive(Default)]
struct Schedule {
    done: Results,
    started: BTreeSet<usize>,
    running: usize,
    error: Option<BuildError>,
    consumed: BTreeSet<String>,
    entries: HashMap<usize, Vec<(usize, String, StepRecord)>>,
    hits: usize,
    misses: usize,
    cache_mounts: BTreeMap<String, PathBuf>,
}

/// Resolves (pulls) an image once per build: concurrent callers for the
/// same reference wait for the first, so a prefetch and the stage that
/// needs the image never download it twice, and every stage sees the same
/// image for a tag.
fn resolve_once(
    req: &BuildRequest,
    shared: &Shared,
    reference: &str,
    platform: &Platform,
) -> Result<(Image, String), BuildError> {
    let cell = {
        let mut map = shared
            .resolved
            .lock()
            .map_err(|_| BuildError::Message("image table lock poisoned".into()))?;
        map.entry(format!("{reference}|{}", platform_string(platform)))
            .or_default()
            .clone()
    };
    let mut slot = cell
        .lock()
        .map_err(|_| BuildError::Message("image lock poisoned".into()))?;
    if let Some(found) = slot.as_ref() {
        return Ok(found.clone());
    }
    let stored = req
        .resolver
        .resolve(req.store, reference, platform)?
        .ok_or_else(|| {
            BuildError::Message(format!(
                "cannot resolve image {reference}: kiln can read base images from oci-layout://DIR[:tag] and oci-archive:FILE here; registry pulls are not available in this build"
            ))
        })?;
    let image = kiln_image::load_image(req.store, &stored.manifest.digest)?;
    let found = (image, stored.manifest.digest.to_string());
    *slot = Some(found.clone());
    Ok(found)
}

/// Decides up front whether the build runs in place (it changes where every
/// stage's files live): only when a needed stage has a RUN step and the
/// isolation asked for (or probed) is in-place. Returns the isolation, if
/// decided, and the in-place root.
fn decide_isolation(
    req: &BuildRequest,
    graph: &Graph,
    stages: &[kiln_dockerfile::ast::Stage<'_>],
) -> Result<
    (
        Option<kiln_sandbox::Isolation>,
        Option<crate::inplace::InPlaceRoot>,
    ),
    BuildError,
> {
    use kiln_sandbox::Isolation;
    let has_run = graph.order.iter().any(|i| {
        stages.get(*i).is_some_and(|s| {
            s.instructions
                .iter()
                .any(|ins| matches!(ins.kind, InstructionKind::Run(_)))
        })
    });
    let chosen = match req.isolation {
        Isolation::Auto if has_run => {
            let (i, why) = kiln_sandbox::probe()?;
            req.progress.info(&format!("RUN isolation: {i} ({why})"));
            Some(i)
        }
        Isolation::Auto => None,
        Isolation::InPlace => {
            req.progress
                .info("RUN isolation: in-place (asked for with --isolation in-place)");
            Some(Isolation::InPlace)
        }
        other => Some(other),
    };
    if chosen != Some(Isolation::InPlace) {
        return Ok((chosen, None));
    }
    if kiln_sandbox::container_evidence().is_none() && !req.force_in_place {
        return Err(BuildError::Message(
            "in-place isolation replaces the root filesystem's contents, and nothing shows kiln runs inside a container here; run it in a container, or force it (executor --force, or KILN_FORCE_IN_PLACE=1) if this machine is disposable".into(),
        ));
    }
    let mut keep = vec![
        req.work_dir.clone(),
        req.store.root().to_path_buf(),
        req.mount_cache_dir.clone(),
        req.context.root().to_path_buf(),
    ];
    if let Ok(exe) = std::env::current_exe() {
        keep.push(exe);
    }
    keep.extend(req.ignore_paths.iter().cloned());
    let root = crate::inplace::InPlaceRoot::new(&keep)?;
    Ok((chosen, Some(root)))
}

pub(crate) struct Executor<'a> {
    pub(crate) req: &'a BuildRequest<'a>,
    pub(crate) df: &'a Dockerfile,
    pub(crate) loc: &'a Locator<'a>,
    pub(crate) graph: &'a Graph,
    global_declared: &'a BTreeMap<String, String>,
    predefined: &'a BTreeMap<String, String>,
    /// Build args this stage declared.
    consumed: BTreeSet<String>,
    shared: &'a Shared,
    /// Keyed steps: (stage index, key, record).
    entries: Vec<(usize, String, StepRecord)>,
    hits: usize,
    misses: usize,
    /// Cache mounts used: id → directory.
    cache_mounts: BTreeMap<String, PathBuf>,
}

impl Executor<'_> {
    pub(crate) fn note_cache_mount(&mut self, id: &str, dir: &Path) {
        self.cache_mounts.insert(id.to_string(), dir.to_path_buf());
    }

    /// The isolation RUN steps use, decided (probed) at the first RUN.
    pub(crate) fn isolation_cell(&self) -> &Mutex<Option<kiln_sandbox::Isolation>> {
        &self.shared.isolation
    }

    /// The in-place root, when steps run in kiln's own container root.
    pub(crate) fn in_place(&self) -> Option<&crate::inplace::InPlaceRoot> {
        self.shared.in_place.as_ref()
    }

    fn created(&self) -> String {
        rfc3339(self.req.source_date_epoch.unwrap_or_else(now_epoch))
    }

    /// How the layers of stage `index` are written: as asked for the
    /// image's own stages; fast for stages whose layers only ever live in
    /// the cache (a reuse by an image re-encodes them, see
    /// [`Self::reuse`]).
    pub(crate) fn layer_options(&self, index: usize) -> LayerOptions {
        let compression = if self.shared.target_chain.contains(&index) {
            self.req.compression
        } else {
            self.req.intermediate_compression
        };
        LayerOptions {
            compression,
            format: self.req.format,
            mtime_clamp: self.req.source_date_epoch,
        }
    }

    fn same_owner() -> bool {
        rustix::process::geteuid().is_root()
    }

    pub(crate) fn stage_dir(&self, what: &str) -> Result<PathBuf, BuildError> {
        let dir = tempfile::Builder::new()
            .prefix(what)
            .tempdir_in(&self.req.work_dir)
            .map_err(|source| BuildError::Io {
                path: self.req.work_dir.clone(),
                source,
            })?
            .keep();
        Ok(dir)
    }

    /// Applies an image's layers onto a fresh directory.
    fn materialize(&self, image: &Image, what: &str) -> Result<PathBuf, BuildError> {
        let dir = self.stage_dir(what)?;
        let opts = kiln_image::ApplyOptions {
            same_owner: Self::same_owner(),
            protected: Vec::new(),
        };
        for layer in &image.layers {
            kiln_image::apply_layer(self.req.store, &layer.digest, &dir, &opts)?;
        }
        Ok(dir)
    }

    fn resolve_image(&self, reference: &str, span: Span) -> Result<(Image, String), BuildError> {
        self.resolve_image_for(reference, &self.req.platform, span)
    }

    /// [`Self::resolve_image`] for another platform (`FROM --platform=…`).
    fn resolve_image_for(
        &self,
        reference: &str,
        platform: &Platform,
        span: Span,
    ) -> Result<(Image, String), BuildError> {
        resolve_once(self.req, self.shared, reference, platform).map_err(|e| match e {
            BuildError::Message(m) if m.starts_with("cannot resolve") => self.loc.at(span, m),
            other => self.loc.locate(span, other),
        })
    }

    fn run_stage(
        &mut self,
        index: usize,
        name: &str,
        from: &Instruction,
        instructions: &[Instruction],
        results: &Results,
    ) -> Result<StageResult, BuildError> {
        let node = self.graph.stages.get(index).ok_or(BuildError::NoStages)?;
        let total = instructions.len() + 1;
        let id = self.next_step();
        let t = Instant::now();
        self.req
            .progress
            .step_started(id, &format!("{name} 1/{total}"), &from.original);
        let mut inherited_args = BTreeMap::new();
        // Layers of the parent stage still being written (see `handoff`).
        let mut handed = std::collections::VecDeque::new();
        let platform = platform_string(&self.req.platform);
        let (image, base_key) = match &node.base {
            Base::Scratch => {
                let config = ImageConfig {
                    architecture: self.req.platform.architecture.clone(),
                    os: self.req.platform.os.clone(),
                    variant: self.req.platform.variant.clone(),
                    ..ImageConfig::default()
                };
                let image = Image {
                    config,
                    layers: Vec::new(),
                };
                let key = KeyBuilder::new("FROM")
                    .field("scratch")
                    .field(&platform)
                    .finish();
                (image, key)
            }
            Base::Stage(i) => {
                let parent = results.get(i).ok_or(BuildError::NoStages)?;
                inherited_args = parent.args.clone();
                if let Ok(mut q) = parent.handoff.lock() {
                    handed = std::mem::take(&mut *q);
                }
                (parent.image.clone(), parent.key.clone())
            }
            Base::Image(reference) => {
                let base_platform = match &node.platform {
                    Some(p) => parse_platform(p).ok_or_else(|| {
                        self.loc.at(
                            from.span,
                            format!("FROM --platform={p}: expected os/arch[/variant]"),
                        )
                    })?,
                    None => self.req.platform.clone(),
                };
                let (image, digest) =
                    self.resolve_image_for(reference, &base_platform, from.span)?;
                let key = KeyBuilder::new("FROM")
                    .field(&digest)
                    .field(&platform)
                    .finish();
                (image, key)
            }
        };
        // Filled lazily: only a step that runs needs the files. In place,
        // the stage's root is kiln's own.
        let mut rootfs = if self.shared.in_place.is_some() {
            PathBuf::from("/")
        } else {
            match self.stage_dir("stage-") {
                Ok(dir) => dir,
                Err(e) => {
                    for p in handed {
                        let _ = p.writer.join();
                    }
                    return Err(e);
                }
            }
        };
        // A parent stage that only this stage reads hands over its files
        // (one rename) instead of having its layers applied again. With
        // layers still being written, which read the parent's root by
        // path, the root is used where it is.
        let mut applied = 0;
        if let (Base::Stage(i), None) = (&node.base, &self.shared.in_place) {
            if let Some(parent) = results.get(i) {
                if handed.is_empty() {
                    applied = self.take_over(*i, parent, &rootfs);
                } else if let Ok(mut a) = parent.applied.lock() {
                    let _ = std::fs::remove_dir(&rootfs);
                    rootfs = parent.rootfs.clone();
                    applied = std::mem::take(&mut *a);
                }
            }
        }
        self.req
            .progress
            .step_finished(id, StepOutcome::Done, t.elapsed());

        let mut config = image.config;
        // A new image: its own timestamps, the platform it is built for.
        config.created = None;
        if config.config.env.iter().all(|e| !e.starts_with("PATH=")) && config.os == "linux" {
            config.config.env.insert(0, format!("PATH={DEFAULT_PATH}"));
        }
        let triggers = std::mem::take(&mut config.config.on_build);
        let mut state = StageState {
            index,
            applied,
            key: base_key,
            rootfs,
            config,
            layers: image.layers,
            args: inherited_args,
            cmd_set: false,
            pending: handed,
            unrecorded: None,
            states: Vec::new(),
            last_files_step: false,
            snapshotting: Vec::new(),
        };
        state
            .states
            .push((state.layers.len() + state.pending.len(), state.key.clone()));

        // ONBUILD triggers of the base image run first, as if written
        // right after FROM.
        for trigger in &triggers {
            let text = format!("FROM scratch\n{trigger}\n");
            let parsed = match kiln_dockerfile::parse("ONBUILD trigger", &text) {
                Ok(parsed) => parsed,
                Err(e) => {
                    // Layers handed over and snapshots being linked are
                    // waited for: nothing outlives the build.
                    self.abandon(&mut state);
                    return Err(self.loc.at(
                        from.span,
                        format!("ONBUILD trigger `{trigger}` of the base image: {e}"),
                    ));
                }
            };
            if let Some(ins) = parsed.instructions.get(1) {
                let relocated = Instruction {
                    span: from.span,
                    original: ins.original.clone(),
                    kind: ins.kind.clone(),
                };
                if let Err(e) = self.run_step(&mut state, &relocated, "ONBUILD", results) {
                    self.abandon(&mut state);
                    return Err(e);
                }
            }
        }

        let last_files_step = instructions.iter().rposition(|i| {
            matches!(
                i.kind,
                InstructionKind::Run(_)
                    | InstructionKind::Copy(_)
                    | InstructionKind::Add(_)
                    | InstructionKind::Workdir(_)
            )
        });
        for (n, ins) in instructions.iter().enumerate() {
            let label = format!("{name} {}/{total}", n + 2);
            state.last_files_step = last_files_step == Some(n)
                && index == self.graph.target
                && self.shared.in_place.is_none();
            if let Err(e) = self.run_step(&mut state, ins, &label, results) {
                self.abandon(&mut state);
                return Err(e);
            }
        }
        // The root is handed on, moved or kept as it is: no snapshot may
        // still be reading it.
        Self::join_snapshots(&mut state);
        // (Not with ONBUILD triggers: run in the next stage, one could read
        // this stage by a `--from` the stage graph cannot see.)
        let hand_over = !state.pending.is_empty()
            && state.config.config.on_build.is_empty()
            && self.hands_over(index);
        if !hand_over && !self.defers(index, &mut state) {
            self.settle(&mut state)?;
        }

        state.config.created = Some(self.clock(&state));
        state.config.rootfs.diff_ids = state.layers.iter().map(|l| l.diff_id.clone()).collect();
        // In place, the root belongs to the next stage: a later stage that
        // reads this one gets its own copy, made from the layers.
        let (rootfs, applied) = if self.shared.in_place.is_some() {
            (self.stage_dir("stage-")?, 0)
        } else {
            (state.rootfs, state.applied)
        };
        Ok(StageResult {
            image: Image {
                config: state.config,
                layers: state.layers,
            },
            rootfs,
            applied: std::sync::Mutex::new(applied),
            key: state.key,
            args: state.args,
            handoff: Mutex::new(state.pending),
        })
    }

    fn next_step(&mut self) -> usize {
        self.shared.step_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn run_step(
        &mut self,
        state: &mut StageState,
        ins: &Instruction,
        label: &str,
        results: &Results,
    ) -> Result<(), BuildError> {
        let id = self.next_step();
        let t = Instant::now();
        self.req.progress.step_started(id, label, &ins.original);
        match self.apply(state, ins, id, results) {
            Ok(outcome) => {
                self.req.progress.step_finished(id, outcome, t.elapsed());
                Ok(())
            }
            Err(e) => {
                self.req
                    .progress
                    .step_finished(id, StepOutcome::Failed, t.elapsed());
                Err(self.loc.locate(ins.span, e))
            }
        }
    }

    pub(crate) fn expand(
        &self,
        state: &StageState,
        word: &str,
        span: Span,
    ) -> Result<String, BuildError> {
        let vars = StageVars {
            env: &state.config.config.env,
            args: &state.args,
        };
        expand_word(word, &vars, self.df.directives.escape)
            .map(|e| e.value)
            .map_err(|e| self.loc.at(span, e.message))
    }

    pub(crate) fn history(&self, state: &mut StageState, created_by: String, empty_layer: bool) {
        state.config.history.push(History {
            created: Some(self.created()),
            created_by: Some(created_by),
            comment: Some("buildkit.dockerfile.v0".into()),
            empty_layer,
            ..History::default()
        });
    }

    /// The time metadata instructions take: that of the latest history
    /// entry (a step that ran now, a cached step's original time, or the
    /// base image's), so a rebuild that reuses everything is identical.
    pub(crate) fn clock(&self, state: &StageState) -> String {
        if self.req.source_date_epoch.is_some() {
            return self.created();
        }
        state
            .config
            .history
            .last()
            .and_then(|h| h.created.clone())
            .unwrap_or_else(|| self.created())
    }

    fn history_meta(&self, state: &mut StageState, created_by: String) {
        let created = self.clock(state);
        state.config.history.push(History {
            created: Some(created),
            created_by: Some(created_by),
            comment: Some("buildkit.dockerfile.v0".into()),
            empty_layer: true,
            ..History::default()
        });
    }

    /// Looks `key` up in the caches; on a hit, adds the recorded layer and
    /// history entry to the stage and returns true.
    pub(crate) fn reuse(
        &mut self,
        state: &mut StageState,
        key: &str,
        id: usize,
    ) -> Result<bool, BuildError> {
        for (n, backend) in self.req.cache.iter().enumerate() {
            let Some(record) = backend.get(key, self.req.store) else {
                continue;
            };
            // A damaged layer blob is never used: it is dropped (so it is
            // fetched or made again) and the lookup goes on.
            if let Some(layer) = &record.layer {
                if let kiln_image::Integrity::Corrupt(why) =
                    self.req.store.check(&layer.digest, layer.size)
                {
                    self.req.progress.step_info(
                        id,
                        &format!(
                            "warning: the {} cache's layer {} is damaged ({why}); not used",
                            backend.describe(),
                            layer.digest
                        ),
                    );
                    if let Err(e) = self.req.store.remove(&layer.digest) {
                        self.req.progress.step_info(id, &format!("warning: {e}"));
                    }
                    continue;
                }
            }
            // The hit's layer goes on top of the one still being written.
            self.settle(state)?;
            if n > 0 {
                // A remote hit: keep it locally too.
                if let Some(local) = self.req.cache.first() {
                    let _ = local.put(key, &record, self.req.store);
                }
            }
            // A layer cached compressed another way (a stage that was not
            // part of the image then, or another --compression) is
            // re-encoded for the image; its diffID, and so the image
            // config, stays the same.
            let mut record = record;
            let opts = self.layer_options(state.index);
            if let Some(layer) = record
                .layer
                .clone()
                .filter(|_| self.shared.target_chain.contains(&state.index))
            {
                if !opts.compression.matches_media_type(&layer.media_type) {
                    match kiln_image::recompress_layer(self.req.store, &layer, &opts) {
                        Ok(l) => {
                            self.req.progress.step_info(
                                id,
                                &format!(
                                    "re-encoded cached layer {} as {}",
                                    layer.digest, l.media_type
                                ),
                            );
                            record.layer = Some(l);
                            // So the next build finds it ready.
                            if let Some(local) = self.req.cache.first() {
                                let _ = local.put(key, &record, self.req.store);
                            }
                        }
                        Err(e) => {
                            self.req.progress.step_info(
                                id,
                                &format!("warning: cached layer {} not used: {e}", layer.digest),
                            );
                            continue;
                        }
                    }
                }
            }
            let what = match &record.layer {
                Some(l) => format!("CACHED ({}): layer {}", backend.describe(), l.digest),
                None => format!("CACHED ({})", backend.describe()),
            };
            self.req.progress.step_info(id, &what);
            if let Some(layer) = &record.layer {
                state.layers.push(layer.clone());
                self.announce(state.index, layer);
            }
            state.config.history.push(record.history.clone());
            state.key = key.to_string();
            state.states.push((state.layers.len(), state.key.clone()));
            self.hits += 1;
            self.entries.push((state.index, key.to_string(), record));
            return Ok(true);
        }
        Ok(false)
    }

    /// Hands a new layer of the target image to `on_layer`.
    fn announce(&self, stage: usize, layer: &Layer) {
        if let Some(f) = self.req.on_layer {
            if self.shared.target_chain.contains(&stage) {
                f(layer);
            }
        }
    }

    /// Records what a step that ran produced (its layer, if it made one,
    /// and its history entry) under `key`. A layer still being written is
    /// recorded when it is settled.
    pub(crate) fn remember(
        &mut self,
        state: &mut StageState,
        key: String,
    ) -> Result<(), BuildError> {
        self.misses += 1;
        state.key = key.clone();
        // The step ran again: files kept from an earlier run of it must
        // not meet its new cache record.
        if let Some(snaps) = &self.shared.snapshots {
            snaps.invalidate(&key);
        }
        let queued = state.pending.len();
        if let Some(p) = state.pending.back_mut().filter(|p| p.key.is_none()) {
            p.key = Some(key.clone());
            state.states.push((state.layers.len() + queued, key));
            return Ok(());
        }
        if queued > 0 && state.unrecorded.is_none() && self.shared.in_place.is_none() {
            // A step that made no layer, after layers still being written:
            // recorded at once, without waiting for them.
            state
                .states
                .push((state.layers.len() + queued, key.clone()));
            if let Some(history) = state.config.history.last().cloned() {
                self.store_record(
                    state.index,
                    key,
                    StepRecord {
                        layer: None,
                        history,
                    },
                );
            }
            return Ok(());
        }
        self.settle(state)?;
        state.states.push((state.layers.len(), key.clone()));
        // The step ran on the materialized root: its layer is on disk.
        state.applied = state.layers.len();
        if let Some(root) = &self.shared.in_place {
            root.holds(&state.layers);
        }
        let Some(history) = state.config.history.last().cloned() else {
            return Ok(());
        };
        let layer = state.unrecorded.take();
        self.store_record(state.index, key, StepRecord { layer, history });
        Ok(())
    }

    /// Puts a step that ran into every cache and the build's cache entries.
    fn store_record(&mut self, stage: usize, key: String, record: StepRecord) {
        put_record(self.req, &key, &record);
        self.entries.push((stage, key, record));
    }

    /// Applies the stage's layers that are not yet on disk.
    pub(crate) fn ensure_rootfs(&mut self, state: &mut StageState) -> Result<(), BuildError> {
        self.ensure_rootfs_then(state, false)
    }

    /// [`Executor::ensure_rootfs`] for a step that only reads the root
    /// until it next settles (a RUN: the root is its overlay's lower
    /// directory, and its merge waits for the stage's snapshot threads).
    /// The copy of a freshly unpacked base image is then linked while the
    /// step runs.
    pub(crate) fn ensure_rootfs_to_read(
        &mut self,
        state: &mut StageState,
    ) -> Result<(), BuildError> {
        self.ensure_rootfs_then(state, true)
    }

    fn ensure_rootfs_then(
        &mut self,
        state: &mut StageState,
        only_reads: bool,
    ) -> Result<(), BuildError> {
        if state.applied < state.layers.len() {
            // Applying layers changes the root a pending writer reads.
            self.settle(state)?;
        }
        if let Some(root) = &self.shared.in_place {
            return root.prepare(self.req.store, &state.layers, &mut state.applied);
        }
        // Unpacked from nothing: the base image's files are kept too, for
        // the next stage or build on the same base.
        let base = match (state.applied, state.states.first()) {
            (0, Some((n, key))) if *n > 0 => Some((*n, key.clone())),
            _ => None,
        };
        let restored = |state: &StageState, n: usize| {
            self.req.progress.info(&format!(
                "files of {} of the stage's {} layer(s) restored from a kept snapshot",
                n,
                state.layers.len()
            ));
        };
        if let (0, Some(snaps)) = (state.applied, &self.shared.snapshots) {
            // The latest state a previous build kept, instead of unpacking
            // the layers below it.
            let found = state.states.iter().rev().find(|(n, key)| {
                *n > 0 && *n <= state.layers.len() && snaps.take(key, &state.rootfs)
            });
            if let Some((n, _)) = found {
                restored(state, *n);
                state.applied = *n;
            }
        }
        // Held until the base is unpacked and kept: a stage on the same
        // base that started at the same time waits, then takes the copy
        // (a rename) instead of unpacking it a second time beside it.
        let base_lock = match (state.applied, &base, &self.shared.snapshots) {
            (0, Some((_, key)), Some(snaps)) if snaps.reuses() => self
                .shared
                .base_locks
                .lock()
                .ok()
                .map(|mut m| m.entry(key.clone()).or_default().clone()),
            _ => None,
        };
        let mut base_guard = base_lock.as_ref().and_then(crate::snapshots::Gate::hold);
        if base_guard.is_some() {
            if let (Some((n, key)), Some(snaps)) = (&base, &self.shared.snapshots) {
                // Kept by the stage that held the lock before.
                if snaps.take(key, &state.rootfs) {
                    restored(state, *n);
                    state.applied = *n;
                    drop(base_guard.take());
                }
            }
        }
        let opts = kiln_image::ApplyOptions {
            same_owner: Self::same_owner(),
            protected: Vec::new(),
        };
        let base = base.filter(|_| state.applied == 0);
        if base.is_none() {
            drop(base_guard.take());
        }
        if state.applied < state.layers.len() {
            Self::join_snapshots(state);
        }
        let started = std::time::Instant::now();
        while let Some(digest) = state.layers.get(state.applied).map(|l| l.digest.clone()) {
            // A copy of the base being linked reads the root as it is.
            Self::join_snapshots(state);
            kiln_image::apply_layer(self.req.store, &digest, &state.rootfs, &opts)?;
            state.applied += 1;
            if let (Some((n, key)), Some(snaps)) = (&base, &self.shared.snapshots) {
                if *n == state.applied {
                    self.req.progress.info(&format!(
                        "unpacked the base image's {n} layer(s) in {:.2}s",
                        started.elapsed().as_secs_f64()
                    ));
                    let background = only_reads && state.applied == state.layers.len();
                    Self::keep_base(state, snaps, key, base_guard.take(), background);
                }
            }
        }
        Ok(())
    }

    /// Keeps a copy of the base image's files, just unpacked in the stage
    /// root, for the next stage or build on that base; `hold` (the base's
    /// gate) is let go once it is kept. In the `background` the copy is
    /// linked while the stage's next step runs, which must not change the
    /// root before [`Executor::join_snapshots`] (that step may see the
    /// link counts of the base's files go up meanwhile; layers do not
    /// record them).
    fn keep_base(
        state: &mut StageState,
        snaps: &crate::snapshots::Snapshots,
        key: &str,
        hold: Option<crate::snapshots::GateHold>,
        background: bool,
    ) {
        let keep = {
            let (snaps, key, root) = (snaps.clone(), key.to_string(), state.rootfs.clone());
            move || {
                if let Err(e) = snaps.keep_linked(&key, &root, None) {
                    tracing::debug!("no snapshot of the base image's files: {e}");
                }
                drop(hold);
            }
        };
        if !background {
            keep();
            return;
        }
        match std::thread::Builder::new()
            .name("kiln-snapshot".into())
            .spawn(keep)
        {
            Ok(thread) => state.snapshotting.push(SnapshotJob {
                thread,
                frozen: None,
            }),
            Err(e) => tracing::debug!("no snapshot of the base image's files: {e}"),
        }
    }

    /// Keeps a hard-link copy of the stage's root as it is before a step
    /// that reads the build context: where a rebuild after an edit starts.
    /// When the step only writes entries of the `frozen` directory, the
    /// copy is linked on a background thread while the step runs (in
    /// `space`, which holds the links to the entries it replaces).
    fn snapshot_before_context_step(
        &self,
        state: &mut StageState,
        frozen: Option<crate::snapshots::Frozen>,
        space: Option<tempfile::TempDir>,
    ) {
        let Some(snaps) = &self.shared.snapshots else {
            return;
        };
        if state.applied != state.layers.len() || state.pending.iter().any(|p| !p.on_disk) {
            return;
        }
        let Some(frozen) = frozen else {
            if let Err(e) = snaps.keep_linked(&state.key, &state.rootfs, None) {
                tracing::debug!("no snapshot of the stage root: {e}");
            }
            return;
        };
        let (snaps, key, root, f) = (
            snaps.clone(),
            state.key.clone(),
            state.rootfs.clone(),
            frozen.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("kiln-snapshot".into())
            .spawn(move || {
                let made = match space {
                    Some(space) => snaps.keep_linked_in(&key, &root, Some(&f), space),
                    None => snaps.keep_linked(&key, &root, Some(&f)),
                };
                if let Err(e) = made {
                    tracing::debug!("no snapshot of the stage root: {e}");
                }
            });
        match thread {
            Ok(thread) => state.snapshotting.push(SnapshotJob {
                thread,
                frozen: Some(frozen),
            }),
            Err(e) => tracing::debug!("no snapshot of the stage root: {e}"),
        }
    }

    /// Waits for the snapshots still being linked: the root is about to
    /// change where they would see it.
    fn join_snapshots(state: &mut StageState) {
        for job in state.snapshotting.drain(..) {
            if job.thread.join().is_err() {
                tracing::debug!("a snapshot thread panicked");
            }
        }
    }

    /// Whether finished stage `index` may leave its last layers unsettled
    /// for the stage built on it: it is not the target, and that stage is
    /// its only reader, is built, reads it through `FROM` alone (a `--from`
    /// would read its files or layers elsewhere) and has its own root (not
    /// in place).
    fn hands_over(&self, index: usize) -> bool {
        let mut readers = self.graph.stages.iter().filter(|n| n.deps.contains(&index));
        let only = match (readers.next(), readers.next()) {
            (Some(r), None) => r,
            _ => return false,
        };
        self.shared.in_place.is_none()
            && index != self.graph.target
            && self.graph.order.contains(&only.index)
            && matches!(only.base, Base::Stage(i) if i == index)
            && !only.from_deps.contains(&index)
    }

    /// Moves the pending layers of finished stage `index` to the build's
    /// deferred list when nothing needs them before the build ends: the
    /// stage is outside the image, not in place, no stage is built `FROM`
    /// it (its readers take files by `--from`, which are all on disk), and
    /// it has no ONBUILD triggers. Its layers then only feed the caches.
    fn defers(&self, index: usize, state: &mut StageState) -> bool {
        let outside = self.shared.in_place.is_none()
            && !self.shared.target_chain.contains(&index)
            && state.config.config.on_build.is_empty()
            && state.applied == state.layers.len()
            && state.pending.iter().all(|p| p.on_disk)
            && !self
                .graph
                .stages
                .iter()
                .any(|n| matches!(n.base, Base::Stage(i) if i == index));
        if !outside || state.pending.is_empty() {
            return false;
        }
        match self.shared.deferred.lock() {
            Ok(mut d) => {
                d.extend(state.pending.drain(..));
                true
            }
            Err(_) => false,
        }
    }

    /// Moves finished stage `index`'s root filesystem to `into` when no
    /// other stage reads that stage; returns how many of its layers are
    /// thereby on disk (0 when it could not be taken). The parent is marked
    /// unmaterialized, so should anything still read it, its layers are
    /// applied again.
    fn take_over(&self, index: usize, parent: &StageResult, into: &Path) -> usize {
        let readers = self
            .graph
            .stages
            .iter()
            .filter(|n| n.deps.contains(&index))
            .count();
        if readers != 1 {
            return 0;
        }
        let Ok(mut applied) = parent.applied.lock() else {
            return 0;
        };
        if *applied == 0 {
            return 0;
        }
        // `into` is a fresh empty directory: replace it with the parent's.
        if std::fs::remove_dir(into).is_err() || std::fs::rename(&parent.rootfs, into).is_err() {
            let _ = std::fs::create_dir_all(into);
            return 0;
        }
        let n = *applied;
        *applied = 0;
        n
    }

    /// A finished stage's root filesystem, with all its layers applied.
    pub(crate) fn stage_root(&self, r: &StageResult) -> Result<PathBuf, BuildError> {
        let opts = kiln_image::ApplyOptions {
            same_owner: Self::same_owner(),
            protected: Vec::new(),
        };
        let mut applied = r
            .applied
            .lock()
            .map_err(|_| BuildError::Message("stage root lock poisoned".into()))?;
        if let (0, Some(snaps)) = (*applied, &self.shared.snapshots) {
            // The stage's finished root, kept by a previous build.
            if !r.image.layers.is_empty() && snaps.take(&r.key, &r.rootfs) {
                *applied = r.image.layers.len();
                self.req.progress.info(&format!(
                    "files of a finished stage ({} layer(s)) restored from a kept snapshot",
                    r.image.layers.len()
                ));
            }
        }
        while let Some(layer) = r.image.layers.get(*applied) {
            kiln_image::apply_layer(self.req.store, &layer.digest, &r.rootfs, &opts)?;
            *applied += 1;
        }
        Ok(r.rootfs.clone())
    }

    /// What a `--from=` (COPY, or a RUN mount) names, for a cache key: the
    /// stage's key or the image's digest. `None` reads the context.
    pub(crate) fn source_identity(
        &mut self,
        from: Option<&str>,
        stage: usize,
        results: &Results,
        span: Span,
    ) -> Result<String, BuildError> {
        let Some(from) = from else {
            return Ok("context".into());
        };
        if let Some(i) = self.graph.lookup(from, stage) {
            let r = results.get(&i).ok_or_else(|| {
                self.loc
                    .at(span, format!("--from={from}: stage was not built"))
            })?;
            return Ok(format!("stage:{}", r.key));
        }
        if let Some(d) = self.known_digest(from) {
            return Ok(format!("image:{d}"));
        }
        let (_, digest) = self.resolve_image(from, span)?;
        if let Ok(mut m) = self.shared.image_digests.lock() {
            m.insert(from.to_string(), digest.clone());
        }
        Ok(format!("image:{digest}"))
    }

    fn known_digest(&self, reference: &str) -> Option<String> {
        self.shared
            .image_digests
            .lock()
            .ok()
            .and_then(|m| m.get(reference).cloned())
    }

    /// Adds the context paths `rel` (and everything below them, after
    /// `.dockerignore`) to a key.
    pub(crate) fn hash_context(&self, key: &mut KeyBuilder, rel: &str) -> Result<(), BuildError> {
        let root = self.req.context.root();
        hash_tree(
            key,
            root,
            rel,
            self.req.context.ignore(),
            self.req.stat_cache,
        )
        .map_err(|source| BuildError::Io {
            path: root.join(rel),
            source,
        })
    }

    fn apply(
        &mut self,
        state: &mut StageState,
        ins: &Instruction,
        id: usize,
        results: &Results,
    ) -> Result<StepOutcome, BuildError> {
        let span = ins.span;
        match &ins.kind {
            InstructionKind::From(_) => {
                return Err(self.loc.at(span, "FROM inside a stage"));
            }
            InstructionKind::Arg(decls) => {
                self.declare_args(state, decls, span)?;
                return Ok(StepOutcome::Done);
            }
            InstructionKind::Env(pairs) => {
                // Every value sees the environment from before this
                // instruction, as Docker does.
                let mut expanded = Vec::with_capacity(pairs.len());
                for kv in pairs {
                    let key = self.expand(state, &kv.key, span)?;
                    let value = self.expand(state, &kv.value, span)?;
                    expanded.push((key, value));
                }
                for (k, v) in &expanded {
                    set_env(&mut state.config.config.env, k, v);
                }
                let text = expanded
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                self.history_meta(state, format!("ENV {text}"));
            }
            InstructionKind::Label(pairs) => {
                for kv in pairs {
                    let key = self.expand(state, &kv.key, span)?;
                    let value = self.expand(state, &kv.value, span)?;
                    state.config.config.labels.insert(key, value);
                }
                self.history_meta(state, ins.original.clone());
            }
            InstructionKind::Maintainer(name) => {
                state.config.author = Some(name.clone());
                self.history_meta(state, ins.original.clone());
            }
            InstructionKind::Expose(ports) => {
                for p in ports {
                    let p = self.expand(state, p, span)?;
                    for port in expand_ports(&p).map_err(|m| self.loc.at(span, m))? {
                        state
                            .config
                            .config
                            .exposed_ports
                            .insert(port, Default::default());
                    }
                }
                self.history_meta(state, ins.original.clone());
            }
            InstructionKind::Volume(vols) => {
                for v in vols {
                    let v = self.expand(state, v, span)?;
                    if v.trim().is_empty() {
                        return Err(self
                            .loc
                            .at(span, "VOLUME specified can not be an empty string"));
                    }
                    state.config.config.volumes.insert(v, Default::default());
                }
                self.history_meta(state, ins.original.clone());
            }
            InstructionKind::User(user) => {
                state.config.config.user = self.expand(state, user, span)?;
                self.history_meta(state, ins.original.clone());
            }
            InstructionKind::Stopsignal(sig) => {
                state.config.config.stop_signal = self.expand(state, sig, span)?;
                self.history_meta(state, ins.original.clone());
            }
            InstructionKind::Shell(shell) => {
                state.config.config.shell = shell.clone();
                self.history_meta(state, ins.original.clone());
            }
            InstructionKind::Cmd(cmd) => {
                state.config.config.cmd = Some(self.command_vec(state, cmd));
                state.cmd_set = true;
                state.config.config.args_escaped = false;
                self.history_meta(state, ins.original.clone());
            }
            InstructionKind::Entrypoint(cmd) => {
                state.config.config.entrypoint = Some(self.command_vec(state, cmd));
                if !state.cmd_set {
                    state.config.config.cmd = None;
                }
                self.history_meta(state, ins.original.clone());
            }
            InstructionKind::Healthcheck(hc) => {
                state.config.config.healthcheck = Some(health_config(hc)?);
                self.history_meta(state, ins.original.clone());
            }
            InstructionKind::Onbuild(inner) => {
                state.config.config.on_build.push(inner.original.clone());
                self.history_meta(state, ins.original.clone());
            }
            InstructionKind::Workdir(dir) => {
                let dir = self.expand(state, dir, span)?;
                let resolved = join_workdir(&state.config.config.working_dir, &dir);
                state.config.config.working_dir = resolved.clone();
                let key = KeyBuilder::new("WORKDIR")
                    .field(&state.key)
                    .field(&resolved)
                    .field(&state.config.config.user)
                    .finish();
                if self.reuse(state, &key, id)? {
                    return Ok(StepOutcome::Cached);
                }
                // Making directories replaces no file a pending layer's
                // writer reads: no need to wait for them. A snapshot being
                // linked must not see them.
                Self::join_snapshots(state);
                self.ensure_rootfs(state)?;
                let owner = if state.config.config.user.is_empty() {
                    (0, 0)
                } else {
                    crate::users::workdir_owner(&state.rootfs, &state.config.config.user)
                };
                let changed = mkdir_all(&state.rootfs, &resolved, owner)?;
                if changed.is_empty() {
                    self.history(state, format!("WORKDIR {resolved}"), true);
                } else {
                    self.commit_layer(state, &changed, format!("WORKDIR {resolved}"), id)?;
                }
                self.remember(state, key)?;
            }
            InstructionKind::Copy(c) => {
                return self.copy_add(state, c, false, ins, id, results);
            }
            InstructionKind::Add(c) => {
                return self.copy_add(state, c, true, ins, id, results);
            }
            InstructionKind::Run(run) => {
                return self.run(state, run, ins, id, results);
            }
        }
        Ok(StepOutcome::Done)
    }

    fn declare_args(
        &mut self,
        state: &mut StageState,
        decls: &[ArgDecl],
        span: Span,
    ) -> Result<(), BuildError> {
        for decl in decls {
            self.consumed.insert(decl.name.clone());
            let value = if let Some(v) = self.req.build_args.get(&decl.name) {
                Some(v.clone())
            } else if let Some(d) = &decl.default {
                Some(self.expand(state, d, span)?)
            } else if let Some(g) = self.global_declared.get(&decl.name) {
                Some(g.clone())
            } else if let Some(current) = state.args.get(&decl.name) {
                // Redeclared without a default: the value the stage already
                // has (set earlier or inherited from its base stage) stays.
                Some(current.clone())
            } else {
                self.predefined.get(&decl.name).cloned()
            };
            match value {
                Some(v) => {
                    state.args.insert(decl.name.clone(), v);
                }
                None => {
                    state.args.remove(&decl.name);
                }
            }
        }
        Ok(())
    }

    fn command_vec(&self, state: &StageState, cmd: &Command) -> Vec<String> {
        match cmd {
            Command::Exec(v) => v.clone(),
            Command::Shell(s) => {
                let mut v = if state.config.config.shell.is_empty() {
                    vec!["/bin/sh".to_string(), "-c".to_string()]
                } else {
                    state.config.config.shell.clone()
                };
                v.push(s.clone());
                v
            }
        }
    }

    fn copy_add(
        &mut self,
        state: &mut StageState,
        c: &CopyAdd,
        is_add: bool,
        ins: &Instruction,
        id: usize,
        results: &Results,
    ) -> Result<StepOutcome, BuildError> {
        let span = ins.span;
        let mut sources = Vec::with_capacity(c.sources.len());
        let mut heredocs = Vec::new();
        for s in &c.sources {
            if let Some(opener) = kiln_dockerfile::parser::heredoc_opener(s) {
                if let Some(h) = c.heredocs.iter().find(|h| h.name == opener.name) {
                    let content = if h.expand {
                        let vars = StageVars {
                            env: &state.config.config.env,
                            args: &state.args,
                        };
                        // Heredoc bodies always use `\` as the escape
                        // character, whatever `# escape=` says (as BuildKit).
                        expand_heredoc(&h.content, &vars, '\\')
                            .map_err(|e| self.loc.at(span, e.message))?
                    } else {
                        h.content.clone()
                    };
                    heredocs.push((h.name.clone(), content));
                    continue;
                }
            }
            sources.push(self.expand(state, s, span)?);
        }
        let dest = self.expand(state, &c.dest, span)?;
        let chown = match &c.chown {
            Some(v) => Some(self.expand(state, v, span)?),
            None => None,
        };
        let chmod = match &c.chmod {
            Some(v) => Some(self.expand(state, v, span)?),
            None => None,
        };
        let mut exclude = Vec::new();
        for e in &c.exclude {
            exclude.push(self.expand(state, e, span)?);
        }
        let checksum = match &c.checksum {
            Some(v) => Some(self.expand(state, v, span)?),
            None => None,
        };

        let from = match &c.from {
            Some(f) => Some(self.expand(state, f, span)?),
            None => None,
        };

        // The key covers everything the step reads: the expanded
        // instruction, the stage's key, and the source's content (files
        // of the context by digest, a stage by its key, an image by its
        // digest). A URL without --checksum is known only once fetched.
        let mut key = KeyBuilder::new(if is_add { "ADD" } else { "COPY" });
        key.field(&state.key)
            .list(&sources)
            .field(&dest)
            .field(&state.config.config.working_dir)
            .field(&format!(
                "{chown:?}|{chmod:?}|{exclude:?}|{checksum:?}|{}|{}|{:?}|{}",
                c.parents, c.link, c.unpack, c.keep_git_dir
            ));
        for (name, body) in &heredocs {
            key.field(name).field(body);
        }
        let identity = self.source_identity(from.as_deref(), state.index, results, span)?;
        key.field(&identity);
        let mut remote = false;
        if from.is_none() {
            let root = self.req.context.root();
            for src in &sources {
                if crate::copy::is_remote_source(src) {
                    remote = true;
                    continue;
                }
                let paths = crate::copy::source_paths(root, self.req.context.ignore(), src)?;
                key.list(&paths);
                for rel in &paths {
                    self.hash_context(&mut key, rel)?;
                }
            }
        }
        let cacheable = !remote || checksum.is_some();
        let key = key.finish();
        if cacheable && self.reuse(state, &key, id)? {
            return Ok(StepOutcome::Cached);
        }
        let (src_root, filter) = match &from {
            None => (
                self.req.context.root().to_path_buf(),
                self.req.context.ignore(),
            ),
            Some(from) => match self.graph.lookup(from, state.index) {
                Some(i) => {
                    let r = results.get(&i).ok_or_else(|| {
                        self.loc
                            .at(span, format!("--from={from}: stage was not built"))
                    })?;
                    (self.stage_root(r)?, None)
                }
                None => (self.image_root(from, span)?, None),
            },
        };
        let add = if is_add {
            Some(AddOptions {
                unpack: c.unpack,
                checksum,
                http: self.req.http,
            })
        } else {
            None
        };
        let rootfs = state.rootfs.clone();
        let request = CopyRequest {
            src_root: &src_root,
            src_filter: filter,
            sources,
            dest,
            workdir: state.config.config.working_dir.clone(),
            dest_root: &rootfs,
            chown,
            chmod,
            exclude,
            parents: c.parents,
            heredocs,
            add,
            preserve_owner: c.from.is_some(),
            link_unchanged: from.is_some() && self.shared.in_place.is_none(),
        };
        // COPY writes into the root the pending layers' writers read:
        // they must be done unless it writes none of their files.
        let scope = crate::copy::write_scope(&rootfs, &request.dest, &request.workdir);
        // What it writes is only looked at when a snapshot or a pending
        // layer can use it (not in place, where neither is ever left).
        let current = !is_add && state.applied == state.layers.len();
        let snapshots_care = current
            && ((self.shared.snapshots.is_some() && from.is_none())
                || !state.snapshotting.is_empty());
        // The entries it may write into an existing destination directory.
        let into = (snapshots_care || (current && !state.pending.is_empty()))
            .then(|| crate::copy::writes_into_dir(&request))
            .flatten()
            .filter(|(dir, _)| Some(dir.as_path()) == scope.as_deref());
        // A COPY that only writes entries of one directory lets the
        // snapshots being linked go on when they leave those entries out
        // (an ADD may write a download beside its destination first); the
        // snapshot before a context COPY keeps links to what it replaces.
        let space = match &self.shared.snapshots {
            Some(snaps) if current && from.is_none() => snaps.workspace().ok(),
            _ => None,
        };
        let frozen = match (&into, &space) {
            (Some((dir, writes)), Some(space)) => {
                crate::snapshots::Frozen::before_replacing(dir, writes, &space.path().join("kept"))
            }
            _ => scope
                .as_deref()
                .filter(|_| snapshots_care)
                .and_then(|scope| crate::snapshots::Frozen::before_writing(&rootfs, scope)),
        };
        let hidden = frozen.as_ref().is_some_and(|f| {
            state
                .snapshotting
                .iter()
                .all(|j| j.frozen.as_ref().is_some_and(|mine| mine.hides(f)))
        });
        if !hidden {
            Self::join_snapshots(state);
        }
        self.settle_unless_apart(state, scope.as_deref(), into.as_ref().map(|(_, w)| w))?;
        self.ensure_rootfs(state)?;
        if from.is_none() {
            self.snapshot_before_context_step(state, frozen, space);
        }
        let created_by = format!("{} # buildkit", ins.original);
        if state.last_files_step && !is_add {
            if let Some(planned) = crate::copy::plan(&request)? {
                // The files are not written to the stage (nothing reads
                // them there): the layer is made from the context or the
                // source stage, which stay as they are until it is written.
                let entries = crate::snapshot::layer_entries_from(
                    &state.rootfs,
                    &planned.changed,
                    &planned.sources,
                )?;
                self.req
                    .progress
                    .step_info(id, "layer made straight from the source files");
                self.write_layer(state, entries, created_by, id, false)?;
                self.remember(state, key)?;
                return Ok(StepOutcome::Done);
            }
        }
        let (changed, linked) = crate::copy::copy_counting(&request)?;
        if linked > 0 {
            self.req.progress.step_info(
                id,
                &format!("{linked} file(s) hard-linked from the source, which stays as it is"),
            );
        }
        self.commit_layer(state, &changed, created_by, id)?;
        let key = if cacheable {
            key
        } else {
            self.settle(state)?;
            // Later steps chain from what was fetched, so they still hit
            // when the URL's content has not changed.
            let produced = match &state.unrecorded {
                Some(l) => l.diff_id.to_string(),
                None => String::new(),
            };
            KeyBuilder::new("ADD-FETCHED")
                .field(&key)
                .field(&produced)
                .finish()
        };
        self.remember(state, key)?;
        Ok(StepOutcome::Done)
    }

    /// The root filesystem of an image named by `COPY --from=<image>`,
    /// materialized once per build.
    pub(crate) fn image_root(
        &mut self,
        reference: &str,
        span: Span,
    ) -> Result<PathBuf, BuildError> {
        // Held while materializing, so two stages never unpack the same
        // image twice.
        let mut roots = self
            .shared
            .image_roots
            .lock()
            .map_err(|_| BuildError::Message("image root lock poisoned".into()))?;
        if let Some(p) = roots.get(reference) {
            return Ok(p.clone());
        }
        let (image, digest) = self.resolve_image(reference, span)?;
        if let Ok(mut m) = self.shared.image_digests.lock() {
            m.insert(reference.to_string(), digest);
        }
        let root = self.materialize(&image, "from-image-")?;
        roots.insert(reference.to_string(), root.clone());
        Ok(root)
    }

    fn commit_layer(
        &mut self,
        state: &mut StageState,
        changed: &[crate::copy::Changed],
        created_by: String,
        id: usize,
    ) -> Result<(), BuildError> {
        let entries = crate::snapshot::layer_entries(&state.rootfs, changed)?;
        self.push_layer(state, entries, created_by, id)
    }

    /// Writes a step's layer (mtimes clamped by the layer writer when
    /// reproducible), adds it and its history entry to the stage.
    pub(crate) fn push_layer(
        &mut self,
        state: &mut StageState,
        entries: Vec<kiln_image::LayerEntry>,
        created_by: String,
        id: usize,
    ) -> Result<(), BuildError> {
        self.write_layer(state, entries, created_by, id, true)
    }

    /// [`Self::push_layer`]; `on_disk`: whether the entries' files are in
    /// the stage root (false for a layer made from the context).
    fn write_layer(
        &mut self,
        state: &mut StageState,
        entries: Vec<kiln_image::LayerEntry>,
        created_by: String,
        id: usize,
        on_disk: bool,
    ) -> Result<(), BuildError> {
        self.history(state, created_by, false);
        // The files the writer will read from the stage root: a later
        // COPY that writes none of them need not wait for it.
        let files = if on_disk {
            entries
                .iter()
                .filter_map(|e| match &e.kind {
                    kiln_image::EntryKind::File { source, .. } => Some(source.clone()),
                    _ => None,
                })
                .collect()
        } else {
            HashSet::new()
        };
        let store = self.req.store.clone();
        let options = self.layer_options(state.index);
        let moved: Arc<Mutex<HashMap<PathBuf, PathBuf>>> = Arc::default();
        let table = moved.clone();
        let writer = std::thread::Builder::new()
            .name("kiln-layer".into())
            .spawn(move || {
                // Opened under the lock: a file is either where it was or
                // already kept aside when the writer looks.
                let open = |source: &Path| {
                    let moved = table
                        .lock()
                        .map_err(|_| std::io::Error::other("a layer writer's file table broke"))?;
                    kiln_image::open_source(moved.get(source).map_or(source, |p| p.as_path()))
                };
                kiln_image::write_layer_opening(&store, entries, &options, &open)
            })
            .map_err(|e| BuildError::Message(format!("cannot start a layer writer: {e}")))?;
        state.pending.push_back(PendingLayer {
            writer,
            step: id,
            key: None,
            history: state.config.history.last().cloned(),
            on_disk,
            files,
            stage: state.index,
            moved,
        });
        // In place, the next step changes the root the writer reads.
        if self.shared.in_place.is_some() {
            self.settle(state)?;
        }
        Ok(())
    }

    /// Settles the pending layers unless a COPY that writes only at or
    /// below `dest` (a host path in the stage root, symlinks resolved;
    /// when `names` is given, only below those entries of it) cannot
    /// change a file they read: then the COPY runs while they are written,
    /// and its own layer queues up behind them. Otherwise only the layers
    /// up to the last one that reads such a file are settled.
    fn settle_unless_apart(
        &mut self,
        state: &mut StageState,
        dest: Option<&Path>,
        names: Option<&std::collections::HashSet<std::ffi::OsString>>,
    ) -> Result<(), BuildError> {
        // Below `dest`, only under the entries `names` (when known).
        let written = |dest: &Path, f: &Path| match (f.strip_prefix(dest), names) {
            (Err(_), _) => false,
            (Ok(_), None) => true,
            (Ok(rel), Some(names)) => rel
                .components()
                .next()
                .is_none_or(|first| names.contains(first.as_os_str())),
        };
        let dest = match dest {
            Some(dest)
                if state.applied == state.layers.len()
                    && state.pending.iter().all(|p| p.on_disk) =>
            {
                dest
            }
            _ => return self.settle(state),
        };
        // Layers settle in step order: up to the last one that reads a file
        // the COPY may write; those after it go on being written.
        while state
            .pending
            .iter()
            .any(|p| p.files.iter().any(|f| written(dest, f)))
        {
            if let Err(e) = self.settle_one(state) {
                self.abandon(state);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Settles the pending layers unless merging a RUN's `changes` (paths
    /// relative to the stage root) leaves every file they read in place:
    /// the same path changed, or a whiteout, an opaque directory or a
    /// non-directory over a directory holding one, would move it aside.
    pub(crate) fn settle_unless_untouched(
        &mut self,
        state: &mut StageState,
        changes: &[kiln_image::LayerEntry],
    ) -> Result<(), BuildError> {
        // The merge changes the root anywhere.
        Self::join_snapshots(state);
        if state.pending.is_empty() {
            return Ok(());
        }
        let read: Option<BTreeSet<String>> = (state.applied == state.layers.len()
            && state.pending.iter().all(|p| p.on_disk))
        .then(|| {
            state
                .pending
                .iter()
                .flat_map(|p| p.files.iter())
                .filter_map(|f| f.strip_prefix(&state.rootfs).ok())
                .map(|r| r.to_string_lossy().into_owned())
                .collect()
        });
        let Some(read) = read else {
            return self.settle(state);
        };
        // A change that is not a directory (a deletion, a replacement by a
        // file or link, an opaque directory) removes everything below it.
        let below_a_removal = changes.iter().any(|c| {
            let below = format!("{}/", c.path);
            !matches!(c.kind, kiln_image::EntryKind::Dir)
                && read
                    .range(below.clone()..)
                    .next()
                    .is_some_and(|r| r.starts_with(&below))
        });
        if below_a_removal {
            return self.settle(state);
        }
        // Files the step replaced or deleted themselves: their writers read
        // links kept to them.
        let replaced: BTreeSet<&str> = changes
            .iter()
            .map(|c| c.path.as_str())
            .filter(|p| read.contains(*p))
            .collect();
        if replaced.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.keep_for_writers(state, &replaced) {
            tracing::debug!("waiting for the layers being written: {e}");
            return self.settle(state);
        }
        Ok(())
    }

    /// Keeps a hard link to each of `replaced` (paths relative to the
    /// stage root, read by pending layers) in the build's discard
    /// directory, and points the pending writers that read the file there:
    /// the merge that follows may then replace or delete it. A writer that
    /// opened the file before keeps reading what it opened; the merge only
    /// starts once every link is made and recorded.
    fn keep_for_writers(
        &self,
        state: &StageState,
        replaced: &BTreeSet<&str>,
    ) -> std::io::Result<()> {
        let kept = self.req.work_dir.join("discarded");
        std::fs::create_dir_all(&kept)?;
        for rel in replaced {
            let source = state.rootfs.join(rel);
            // A writer that has a link already keeps it: the file as its
            // step left it (the path may have been deleted since).
            let readers: Vec<&PendingLayer> = state
                .pending
                .iter()
                .filter(|p| p.files.contains(&source))
                .filter(|p| p.moved.lock().is_ok_and(|m| !m.contains_key(&source)))
                .collect();
            if readers.is_empty() {
                continue;
            }
            let n = KEPT_FOR_WRITERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let link = kept.join(format!("w{}-{n}", std::process::id()));
            std::fs::hard_link(&source, &link)?;
            for p in readers {
                let mut moved = p
                    .moved
                    .lock()
                    .map_err(|_| std::io::Error::other("a layer writer's file table broke"))?;
                moved.entry(source.clone()).or_insert_with(|| link.clone());
            }
        }
        Ok(())
    }

    /// Waits for the layers still being written, adds them to the stage in
    /// order, hands them to the uploader and records their steps in the
    /// caches.
    pub(crate) fn settle(&mut self, state: &mut StageState) -> Result<(), BuildError> {
        Self::join_snapshots(state);
        while !state.pending.is_empty() {
            if let Err(e) = self.settle_one(state) {
                self.abandon(state);
                return Err(e);
            }
        }
        Ok(())
    }

    /// The build fails: the layers still being written are waited for (so
    /// no writer outlives the build), and the steps whose layers came out
    /// whole are still recorded in the caches, so the next build reuses
    /// them.
    fn abandon(&mut self, state: &mut StageState) {
        Self::join_snapshots(state);
        for p in std::mem::take(&mut state.pending) {
            if let (Ok(Ok(layer)), Some(key), Some(history)) = (p.writer.join(), p.key, p.history) {
                self.store_record(
                    p.stage,
                    key,
                    StepRecord {
                        layer: Some(layer),
                        history,
                    },
                );
            }
        }
    }

    fn settle_one(&mut self, state: &mut StageState) -> Result<(), BuildError> {
        let Some(p) = state.pending.pop_front() else {
            return Ok(());
        };
        let joined = p
            .writer
            .join()
            .map_err(|_| BuildError::Message("the layer writer panicked".into()));
        let layer = match joined {
            Ok(Ok(layer)) => layer,
            Ok(Err(e)) => return Err(e.into()),
            Err(e) => return Err(e),
        };
        self.req.progress.step_info(
            p.step,
            &format!("layer {} ({} bytes)", layer.digest, layer.size),
        );
        self.announce(p.stage, &layer);
        // Its files are on disk when every layer before it is.
        let on_disk = p.on_disk && state.applied == state.layers.len();
        state.layers.push(layer.clone());
        if on_disk {
            state.applied = state.layers.len();
        }
        match (p.key, p.history) {
            (Some(key), Some(history)) => self.store_record(
                p.stage,
                key,
                StepRecord {
                    layer: Some(layer),
                    history,
                },
            ),
            // Settled before its step was remembered (in place, or an ADD
            // whose key depends on what it fetched): `remember` records it.
            (None, _) => state.unrecorded = Some(layer),
            (Some(_), None) => {}
        }
        Ok(())
    }
}

/// Puts a step's record into every cache of the build; a cache that
/// refuses it is a warning, not a failed build.
fn put_record(req: &BuildRequest, key: &str, record: &StepRecord) {
    for backend in &req.cache {
        if let Err(e) = backend.put(key, record, req.store) {
            req.progress.info(&format!(
                "warning: could not store a step in the {} cache: {e}",
                backend.describe()
            ));
        }
    }
}

fn set_env(env: &mut Vec<String>, key: &str, value: &str) {
    let entry = format!("{key}={value}");
    for e in env.iter_mut() {
        if e.split_once('=').map(|(k, _)| k) == Some(key) || e == key {
            *e = entry;
            return;
        }
    }
    env.push(entry);
}

/// Joins a WORKDIR onto the current one and cleans the result.
fn join_workdir(current: &str, dir: &str) -> String {
    let joined = if dir.starts_with('/') {
        dir.to_string()
    } else {
        let base = if current.is_empty() { "/" } else { current };
        format!("{base}/{dir}")
    };
    clean_abs(&joined)
}

/// Lexically cleans an absolute path (`/a/./b/../c` → `/a/c`).
pub fn clean_abs(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Creates `dir` (absolute, cleaned) and its missing parents inside
/// `rootfs`, owned by `owner` (when this process may chown); returns the
/// directories it created. Symlinks on the way are followed inside the root,
/// as BuildKit resolves WORKDIR inside the image, and every directory is
/// made through [`kiln_image::root::Root`], so an image's symlink can never
/// lead the creation out of the root.
fn mkdir_all(
    rootfs: &Path,
    dir: &str,
    owner: (u32, u32),
) -> Result<Vec<crate::copy::Changed>, BuildError> {
    use kiln_image::root::{NewDir, Root, RootError};
    let fail = |e: RootError| match e {
        RootError::NotADirectory { at, .. } => BuildError::Message(format!(
            "WORKDIR {dir}: /{at} exists and is not a directory"
        )),
        e => BuildError::Message(format!("WORKDIR {dir}: {e}")),
    };
    let root = Root::open(rootfs).map_err(fail)?;
    let resolved = root
        .dir(
            dir,
            Some(NewDir {
                mode: 0o755,
                owner: Some(owner),
            }),
        )
        .map_err(fail)?
        .ok_or_else(|| BuildError::Message(format!("WORKDIR {dir}: could not be created")))?;
    Ok(resolved
        .created
        .into_iter()
        .map(|path| crate::copy::Changed {
            path,
            uid: owner.0,
            gid: owner.1,
        })
        .collect())
}

/// Expands an EXPOSE word into `port/proto` keys, ranges included
/// (`8000-8002/udp`).
pub fn expand_ports(spec: &str) -> Result<Vec<String>, String> {
    let (ports, proto) = match spec.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("EXPOSE {spec}: invalid protocol {proto}"));
    }
    // "ip:host:container" forms are rejected by BuildKit as well.
    let parse = |s: &str| -> Result<u32, String> {
        s.parse::<u32>()
            .ok()
            .filter(|n| *n <= 65_535)
            .ok_or_else(|| format!("EXPOSE {spec}: invalid port {s}"))
    };
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => {
            let p = parse(ports)?;
            (p, p)
        }
    };
    if hi < lo {
        return Err(format!("EXPOSE {spec}: invalid range"));
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

fn health_config(hc: &Healthcheck) -> Result<kiln_image::HealthConfig, BuildError> {
    match hc {
        Healthcheck::None => Ok(kiln_image::HealthConfig {
            test: vec!["NONE".into()],
            ..Default::default()
        }),
        Healthcheck::Check {
            command,
            interval,
            timeout,
            start_period,
            start_interval,
            retries,
        } => {
            let test = match command {
                Command::Exec(v) => {
                    let mut t = vec!["CMD".to_string()];
                    t.extend(v.iter().cloned());
                    t
                }
                Command::Shell(s) => vec!["CMD-SHELL".to_string(), s.clone()],
            };
            let d = |v: &Option<String>| -> Result<i64, BuildError> {
                match v {
                    Some(s) => parse_duration(s).ok_or_else(|| {
                        BuildError::Message(format!("HEALTHCHECK: invalid duration {s}"))
                    }),
                    None => Ok(0),
                }
            };
            Ok(kiln_image::HealthConfig {
                test,
                interval: d(interval)?,
                timeout: d(timeout)?,
                start_period: d(start_period)?,
                start_interval: d(start_interval)?,
                retries: retries.map(i64::from).unwrap_or(0),
            })
        }
    }
}

/// Parses a Go-style duration (`1h2m3.5s`, `300ms`, `0`) into nanoseconds,
/// with the parser's implementation (the one that validated it).
pub fn parse_duration(s: &str) -> Option<i64> {
    kiln_dockerfile::parser::parse_go_duration(s)
        .ok()
        .and_then(|n| i64::try_from(n).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        assert_eq!(expand_ports("80").ok(), Some(vec!["80/tcp".to_string()]));
        assert_eq!(
            expand_ports("8000-8002/udp").ok(),
            Some(vec![
                "8000/udp".to_string(),
                "8001/udp".to_string(),
                "8002/udp".to_string()
            ])
        );
        assert!(expand_ports("80/xyz").is_err());
        assert!(expand_ports("99999").is_err());
        assert!(expand_ports("9-1").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(30_000_000_000));
        assert_eq!(parse_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_duration("300ms"), Some(300_000_000));
        assert_eq!(parse_duration("1h"), Some(3_600_000_000_000));
        assert_eq!(parse_duration("abc"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn workdirs() {
        assert_eq!(join_workdir("", "app"), "/app");
        assert_eq!(join_workdir("/a", "b/../c"), "/a/c");
        assert_eq!(join_workdir("/a", "/x/./y/"), "/x/y");
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn local_refs() {
        assert_eq!(split_local_ref("/tmp/x:v1"), ("/tmp/x", Some("v1")));
        assert_eq!(split_local_ref("/tmp/x"), ("/tmp/x", None));
        assert_eq!(
            split_local_ref("/tmp/x@sha256:ab"),
            ("/tmp/x", Some("sha256:ab"))
        );
        assert_eq!(split_local_ref("./a.b/c"), ("./a.b/c", None));
    }
}
