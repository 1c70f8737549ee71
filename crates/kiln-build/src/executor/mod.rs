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

mod copy_add;
mod dispatch;
mod layers;
mod meta;
mod records;
mod roots;
mod solve;
mod stage;

pub use meta::{clean_abs, expand_ports, parse_duration};
pub use solve::build;

use std::collections::{BTreeMap, BTreeSet, HashMap};
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
    pub secrets: BTreeMap<String, crate::secrets::SecretSource>,
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
    pub(crate) handoff: Mutex<LayerQueue>,
}

/// The state of the stage being built.
pub(crate) use crate::rootfs::kept::SnapshotJob;

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
    pub(crate) pending: LayerQueue,
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

pub(crate) use crate::layer_queue::{LayerQueue, PendingLayer};

/// `os/arch[/variant]` (as `FROM --platform=` gives it).
fn parse_platform(s: &str) -> Option<Platform> {
    s.parse().ok()
}

fn platform_string(p: &Platform) -> String {
    p.to_string()
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

/// Stages already built, shared with the stages that read them.
pub(crate) type Results = HashMap<usize, Arc<StageResult>>;

/// What stages building at the same time share.
struct Shared {
    step_id: AtomicUsize,
    image_roots: Mutex<HashMap<String, PathBuf>>,
    image_digests: Mutex<HashMap<String, String>>,
    isolation: Mutex<Option<kiln_sandbox::Isolation>>,
    /// Where the stages' root filesystems live.
    roots: Box<dyn crate::rootfs::StageRoots>,
    /// Images resolved so far, by reference ([`resolve_once`]).
    resolved: Mutex<HashMap<String, ResolvedSlot>>,
    /// The stages whose layers make up the target image.
    target_chain: BTreeSet<usize>,
    /// Layers of stages outside the image, still being written when their
    /// stage ended ([`Executor::defers`]): joined and recorded at the end
    /// of the build.
    deferred: Mutex<Vec<PendingLayer>>,
}

type ResolvedSlot = Arc<Mutex<Option<(Image, String)>>>;

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
            .map_err(|_| BuildError::Poisoned("image table"))?;
        map.entry(format!("{reference}|{}", platform_string(platform)))
            .or_default()
            .clone()
    };
    let mut slot = cell.lock().map_err(|_| BuildError::Poisoned("image"))?;
    if let Some(found) = slot.as_ref() {
        return Ok(found.clone());
    }
    let stored = req
        .resolver
        .resolve(req.store, reference, platform)?
        .ok_or_else(|| BuildError::NoRegistry {
            reference: reference.to_string(),
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
        Box<dyn crate::rootfs::StageRoots>,
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
    Ok((chosen, stage_roots(req, chosen)?))
}

/// The stage roots for a build whose RUN steps use `chosen` (`None`: no
/// RUN): in place, kiln's own container root (only where kiln can tell it
/// runs in a container, or is forced to); otherwise private directories.
fn stage_roots(
    req: &BuildRequest,
    chosen: Option<kiln_sandbox::Isolation>,
) -> Result<Box<dyn crate::rootfs::StageRoots>, BuildError> {
    use kiln_sandbox::Isolation;
    if chosen != Some(Isolation::InPlace) {
        return Ok(Box::new(crate::rootfs::private::PrivateRoots::new(
            req.snapshot_dir.as_ref().map(|dir| {
                crate::rootfs::kept::Snapshots::new(
                    dir.clone(),
                    req.work_dir.join("discarded"),
                    req.reuse_snapshots,
                )
            }),
        )));
    }
    if kiln_sandbox::container_evidence().is_none() && !req.force_in_place {
        return Err(BuildError::InPlaceOutsideContainer);
    }
    // In place, the build is its container's only tenant, and a step run as
    // the image's user reaches its cache mounts through symlinks into the
    // cache directory: the directories on that way must be traversable
    // (0711, never listable) even where the cache was made private.
    crate::scratch::traversable(req.store.root(), &req.mount_cache_dir).map_err(|source| {
        BuildError::Io {
            path: req.mount_cache_dir.clone(),
            source,
        }
    })?;
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
    Ok(Box::new(crate::rootfs::in_place::InPlaceRoot::new(&keep)?))
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
    pub(crate) fn in_place(&self) -> Option<&crate::rootfs::in_place::InPlaceRoot> {
        self.shared.roots.in_place()
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
            e @ BuildError::NoRegistry { .. } => self.loc.at(span, e.to_string()),
            other => self.loc.locate(span, other),
        })
    }
}
