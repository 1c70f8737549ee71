//! A build job: the normalized options both front-ends (`kiln build` and
//! the Kaniko-compatible `kiln executor`) produce, and the orchestration that
//! runs it through the pipeline crates: the context and Dockerfile in, one
//! build per target platform (kiln-build), then the images out (kiln-export:
//! outputs, index, pushes, result files).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use kiln_build::progress::{Progress as _, ProgressMode, StderrProgress};
use kiln_build::remote_cache::{CacheSpec, CacheTransport, RepoCache};
use kiln_build::BuildRequest;
use kiln_export::{ExportEnv, ExportPlan, Exporter, PlatformResult};
use kiln_image::{BlobStore, Compression, Platform};

use crate::flags::host_platform;

/// Everything one build needs, whichever command line described it.
pub struct Job {
    pub context: String,
    /// A sub-directory of the context to build from.
    pub context_sub_path: Option<String>,
    /// Options for git contexts.
    pub git: kiln_context::GitOptions,
    /// The Dockerfile path; `None` = `CONTEXT/Dockerfile`; `-` = stdin.
    pub dockerfile: Option<PathBuf>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    /// Target platforms: one builds an image; more build the Dockerfile once per
    /// platform into one image index.
    pub platforms: Vec<Platform>,
    pub labels: BTreeMap<String, String>,
    pub progress: ProgressMode,
    pub cache_dir: PathBuf,
    /// Step caching.
    pub cache: CacheSettings,
    /// Stages built at once (0: one per CPU).
    pub jobs: usize,
    pub source_date_epoch: Option<i64>,
    pub compression: Compression,
    pub secrets: BTreeMap<String, kiln_build::secrets::SecretSource>,
    pub ssh: BTreeMap<String, PathBuf>,
    pub isolation: kiln_sandbox::Isolation,
    /// In-place builds: paths never touched.
    pub ignore_paths: Vec<PathBuf>,
    /// In-place builds even where nothing shows a container.
    pub force_in_place: bool,
    /// `--allow security.insecure`.
    pub allow_insecure: bool,
    pub registry: kiln_registry::RegistryOptions,
    /// Where the images go (tags, outputs, pushes, result files), and the
    /// media type family they are built in.
    pub export: ExportPlan,
}

/// How a job uses step caches.
#[derive(Debug, Clone, Default)]
pub struct CacheSettings {
    /// Store steps in the cache directory.
    pub local: bool,
    /// Reuse steps found there.
    pub lookup: bool,
    /// Records older than this are misses (Kaniko's `--cache-ttl`).
    pub ttl: Option<std::time::Duration>,
    /// Kaniko's layout: each step an image in this repository.
    pub repo: Option<RepoCacheSettings>,
    /// BuildKit-style imports and exports.
    pub from: Vec<CacheSpec>,
    pub to: Vec<CacheSpec>,
}

/// Kaniko's `--cache-repo` settings.
#[derive(Debug, Clone)]
pub struct RepoCacheSettings {
    pub repo: String,
    pub push: bool,
    pub copy_layers: bool,
    pub run_layers: bool,
}

/// Runs the job; prints the image digest on stdout.
pub fn execute(job: Job) -> Result<()> {
    // Every name is checked before anything is written.
    let exporter = Exporter::new(job.export.clone())?;
    // Shared with other builds; `kiln cache prune` waits for none to run.
    // A build that finds itself alone first removes what killed builds
    // left half-written.
    let mut alone = || {
        if let Err(e) = kiln_build::scratch::remove_partial_writes(&job.cache_dir) {
            eprintln!(
                "warning: cannot remove unfinished writes in {}: {e}",
                job.cache_dir.display()
            );
        }
    };
    let _lock = kiln_build::cache::CacheLock::shared_after(&job.cache_dir, &mut alone)
        .with_context(|| format!("locking the cache directory {}", job.cache_dir.display()))?;
    let store = BlobStore::open(&job.cache_dir)
        .with_context(|| format!("opening the cache directory {}", job.cache_dir.display()))?;
    // In place, the build is the container's only tenant, and steps run
    // as the image's users reach mounts placed under the cache directory
    // through symlinks: it keeps its mode there.
    if job.isolation != kiln_sandbox::Isolation::InPlace {
        kiln_build::scratch::make_private(&job.cache_dir)
            .with_context(|| format!("securing the cache directory {}", job.cache_dir.display()))?;
    }
    if let Err(e) = kiln_build::scratch::sweep_dead(&job.cache_dir) {
        eprintln!(
            "warning: cannot remove the scratch space of earlier builds in {}: {e}",
            job.cache_dir.display()
        );
    }
    let lease = kiln_build::scratch::ScratchLease::create(&job.cache_dir).with_context(|| {
        format!(
            "creating a scratch directory in {}",
            job.cache_dir.join("work").display()
        )
    })?;
    let work = lease.path().to_path_buf();
    let result = build_and_export(&job, &exporter, &store, &work);
    // Before the scratch space goes: what a failed write left there is
    // part of why the filesystem is full.
    let result = explain_full_cache(result, &job.cache_dir);
    crate::cleanup::discard(&job.cache_dir, &work);
    lease.release();
    result
}

/// A build that failed because the cache filesystem filled up says so,
/// naming it, whatever step or file met the full disk.
fn explain_full_cache(result: Result<()>, cache_dir: &Path) -> Result<()> {
    let Err(e) = result else {
        return result;
    };
    if format!("{e:#}").contains("the cache filesystem") {
        return Err(e);
    }
    if let Some(full) = kiln_build::scratch::full_filesystem(cache_dir) {
        return Err(e.context(full));
    }
    if kiln_build::scratch::is_no_space(e.chain()) {
        let name = kiln_build::scratch::filesystem_name(cache_dir);
        return Err(e.context(format!(
            "the cache filesystem {name} is full (no space left on device)"
        )));
    }
    Err(e)
}

fn build_and_export(job: &Job, exporter: &Exporter, store: &BlobStore, work: &Path) -> Result<()> {
    let stdin_dockerfile = job.dockerfile.as_deref() == Some(Path::new("-"));
    if stdin_dockerfile && matches!(job.context.as_str(), "-" | "tar://stdin") {
        bail!("the Dockerfile and the context cannot both come from standard input");
    }
    let given = if stdin_dockerfile {
        None
    } else {
        job.dockerfile.as_deref()
    };
    let context_options = kiln_context::ContextOptions {
        sub_path: job.context_sub_path.clone(),
        git: job.git.clone(),
        work_dir: work.join("context"),
        ..Default::default()
    };
    let context = kiln_context::open(&job.context, given, &context_options)?;
    let (dockerfile_name, dockerfile_text) = if stdin_dockerfile {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the Dockerfile from standard input")?;
        ("Dockerfile".to_string(), text)
    } else {
        let path = context.dockerfile_path(given);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading Dockerfile {}", path.display()))?;
        (path.display().to_string(), text)
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the I/O runtime")?;
    let http = kiln_build::fetch::HttpFetcher::new(runtime.handle().clone())?;
    let progress = StderrProgress::new(job.progress);
    let registry = kiln_registry::RegistryClient::new(job.registry.clone())?;
    let resolver = kiln_build::registry::RegistryImages {
        client: &registry,
        runtime: runtime.handle().clone(),
        progress: &progress,
    };
    let local_cache = if job.cache.local {
        let cache = kiln_build::cache::StepCache::open(&job.cache_dir)
            .with_context(|| format!("opening the step cache in {}", job.cache_dir.display()))?;
        Some(kiln_build::cache::LocalBackend {
            cache,
            ttl: job.cache.ttl,
            lookup: job.cache.lookup,
        })
    } else {
        None
    };
    let stat_cache = if job.cache.local {
        kiln_build::cache::StatCache::load(&job.cache_dir, context.root())
    } else {
        kiln_build::cache::StatCache::default()
    };
    if job.platforms.is_empty() {
        bail!("no target platform");
    }
    let multi = job.platforms.len() > 1;
    let mut built: Vec<PlatformResult> = Vec::new();
    let mut cache_entries = Vec::new();
    let mut cache_mounts: Vec<(String, PathBuf)> = Vec::new();
    for (i, platform) in job.platforms.iter().enumerate() {
        if multi {
            progress.info(&format!("building for {}", platform));
        }
        let transport = CacheTransport {
            client: &registry,
            runtime: runtime.handle().clone(),
            progress: &progress,
            platform: platform.clone(),
        };
        let imported: Vec<_> = if job.cache.lookup {
            job.cache
                .from
                .iter()
                .filter_map(|spec| transport.import(store, spec))
                .collect()
        } else {
            Vec::new()
        };
        for cache in &imported {
            let n = cache.restore_mounts(store, &job.cache_dir.join("mounts"))?;
            if n > 0 {
                progress.info(&format!("restored {n} cache mount(s) from {}", cache.name));
            }
        }
        let repo_cache = job.cache.repo.as_ref().map(|r| RepoCache {
            client: &registry,
            runtime: runtime.handle().clone(),
            progress: &progress,
            repo: r.repo.clone(),
            platform: platform.clone(),
            ttl: job.cache.ttl,
            push: r.push,
            copy_layers: r.copy_layers,
            run_layers: r.run_layers,
        });
        let mut backends: Vec<&dyn kiln_build::cache::CacheBackend> = Vec::new();
        if let Some(local) = &local_cache {
            backends.push(local);
        }
        for i in &imported {
            backends.push(i);
        }
        if let Some(r) = &repo_cache {
            backends.push(r);
        }
        // Layers start uploading to the destinations while later steps run.
        let built_one = kiln_build::registry::with_early_uploads(
            &registry,
            runtime.handle(),
            store,
            &job.export.push_to,
            |on_layer| {
                let request = BuildRequest {
                    dockerfile_name: dockerfile_name.clone(),
                    dockerfile: dockerfile_text.clone(),
                    context: &context,
                    build_args: job.build_args.clone(),
                    target: job.target.clone(),
                    platform: platform.clone(),
                    build_platform: host_platform(),
                    labels: job.labels.clone(),
                    store,
                    work_dir: work.join(format!("stages-{i}")),
                    compression: job.compression,
                    intermediate_compression: kiln_build::intermediate_compression(
                        job.cache.to.iter().any(CacheSpec::exports_all_stages)
                            || job.cache.repo.as_ref().is_some_and(|r| r.push),
                    ),
                    format: job.export.format,
                    source_date_epoch: job.source_date_epoch,
                    resolver: &resolver,
                    http: &http,
                    progress: &progress,
                    isolation: job.isolation,
                    secrets: job.secrets.clone(),
                    ssh: job.ssh.clone(),
                    mount_cache_dir: job.cache_dir.join("mounts"),
                    cache: backends,
                    stat_cache: &stat_cache,
                    jobs: job.jobs,
                    ignore_paths: job.ignore_paths.clone(),
                    force_in_place: job.force_in_place,
                    allow_insecure: job.allow_insecure,
                    on_layer,
                    snapshot_dir: job.cache.local.then(|| job.cache_dir.join("snapshots")),
                    reuse_snapshots: job.cache.lookup,
                };
                kiln_build::build(&request)
            },
        );
        // Only a multi-platform build says which platform failed; an empty
        // context would print as a stray ": " before the error.
        let mut out = if multi {
            built_one.with_context(|| format!("building for {}", platform))?
        } else {
            built_one?
        };
        if i == 0 {
            for warning in &out.lint_warnings {
                eprintln!("warning: {warning}");
            }
            for arg in &out.unused_args {
                eprintln!("warning: build arg {arg} was given but no ARG instruction declares it");
            }
        }
        if job.cache.to.contains(&CacheSpec::Inline) {
            let selected = kiln_build::remote_cache::select(&out.cache_entries, false);
            kiln_build::remote_cache::inline_into(&mut out.image, &selected);
            out.stored = kiln_image::store_image(store, &out.image, job.export.format)?;
        }
        cache_entries.extend(out.cache_entries.iter().cloned());
        cache_mounts.extend(out.cache_mounts.iter().cloned());
        built.push(out.into());
    }
    if let Some(first) = job.platforms.first() {
        // One cache image for every platform: their steps have different keys.
        let transport = CacheTransport {
            client: &registry,
            runtime: runtime.handle().clone(),
            progress: &progress,
            platform: first.clone(),
        };
        for spec in &job.cache.to {
            transport.export(store, spec, &cache_entries, &cache_mounts)?;
        }
    }

    let env = ExportEnv {
        store,
        registry: &registry,
        runtime: runtime.handle(),
        progress: &progress,
        work,
    };
    let report = exporter.export(&env, built)?;
    println!("{}", report.digest());
    Ok(())
}
