//! A build job: the normalized options both front-ends (`kiln build` and
//! the Kaniko-compatible `kiln executor`) produce, and the wiring that runs
//! it through the pipeline crates: one build per target platform, and for
//! several platforms one image index that outputs hold and pushes tag.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use kiln_build::output::{export, Output};
use kiln_build::progress::{Progress as _, ProgressMode, StderrProgress};
use kiln_build::remote_cache::{CacheSpec, CacheTransport, RepoCache};
use kiln_build::BuildRequest;
use kiln_image::{
    BlobStore, Compression, Descriptor, Format, Index, Platform, StoredImage,
    MT_DOCKER_MANIFEST_LIST, MT_OCI_INDEX,
};

/// Everything one build needs, whichever command line described it.
pub struct Job {
    pub context: String,
    /// A sub-directory of the context to build from.
    pub context_sub_path: Option<String>,
    /// Options for git contexts.
    pub git: kiln_context::GitOptions,
    /// The Dockerfile path; `None` = `CONTEXT/Dockerfile`; `-` = stdin.
    pub dockerfile: Option<PathBuf>,
    /// Image names: tags for outputs, destinations for pushes.
    pub tags: Vec<String>,
    pub push_to: Vec<String>,
    pub outputs: Vec<Output>,
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
    pub format: Format,
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
    /// Result files.
    pub digest_file: Option<PathBuf>,
    pub metadata_file: Option<PathBuf>,
    pub image_name_with_digest_file: Option<PathBuf>,
    pub image_name_tag_with_digest_file: Option<PathBuf>,
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

/// Parses a Go-style duration (`336h`, `30m`, `1h30m`) for a flag.
pub fn parse_ttl(flag: &str, value: &str) -> Result<std::time::Duration> {
    let nanos = kiln_dockerfile::parser::parse_go_duration(value)
        .map_err(|e| anyhow::anyhow!("{flag} {value}: {e}"))?;
    if nanos < 0 {
        bail!("{flag} {value}: a duration cannot be negative");
    }
    Ok(std::time::Duration::from_nanos(
        u64::try_from(nanos).unwrap_or(u64::MAX),
    ))
}

pub fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(x).join("kiln");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".cache").join("kiln");
    }
    std::env::temp_dir().join("kiln-cache")
}

pub fn host_platform() -> Platform {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    let variant = if arch == "arm64" { Some("v8") } else { None };
    Platform::new("linux", arch, variant)
}

pub fn parse_platform(flag: &str, s: &str) -> Result<Platform> {
    let parts: Vec<&str> = s.split('/').collect();
    match parts.as_slice() {
        [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform::new(os, arch, None)),
        [os, arch, variant] if !os.is_empty() && !arch.is_empty() => {
            Ok(Platform::new(os, arch, Some(variant)))
        }
        _ => bail!("{flag} {s}: expected os/arch[/variant], e.g. linux/amd64"),
    }
}

/// A comma-separated platform list (`linux/amd64,linux/arm64`), each once, in the
/// order given.
pub fn parse_platforms(flag: &str, s: &str) -> Result<Vec<Platform>> {
    let mut v: Vec<Platform> = Vec::new();
    for part in s.split(',').map(str::trim) {
        let p = parse_platform(flag, part)?;
        if v.contains(&p) {
            bail!("{flag} {s}: {part} is given twice");
        }
        v.push(p);
    }
    Ok(v)
}

/// `K=V`, or `K` alone taking its value from the environment.
pub fn parse_kv(flag: &str, raw: &str, from_env: bool) -> Result<(String, String)> {
    match raw.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        None if from_env && !raw.is_empty() => match std::env::var(raw) {
            Ok(v) => Ok((raw.to_string(), v)),
            Err(_) => bail!("{flag} {raw}: not set in the environment"),
        },
        _ => bail!("{flag} {raw}: expected KEY=VALUE"),
    }
}

/// Repeated `K=V` flags into a map (`from_env`: `K` alone reads the
/// environment, as `--build-arg` does).
pub fn parse_kv_list(
    flag: &str,
    raw: &[String],
    from_env: bool,
) -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for r in raw {
        let (k, v) = parse_kv(flag, r, from_env)?;
        map.insert(k, v);
    }
    Ok(map)
}

/// Repeated `--secret` flags into secret sources by id.
pub fn parse_secrets(
    raw: &[String],
) -> Result<BTreeMap<String, kiln_build::secrets::SecretSource>> {
    let mut map = BTreeMap::new();
    for s in raw {
        let (id, src) = kiln_build::secrets::SecretSource::parse(s)?;
        map.insert(id, src);
    }
    Ok(map)
}

pub fn parse_compression(name: &str, level: Option<i32>) -> Result<Compression> {
    Ok(match (name, level) {
        ("gzip", level) => Compression::Gzip {
            level: match level {
                None => 6,
                Some(l @ 0..=9) => l as u32,
                Some(l) => bail!("--compression-level {l}: gzip levels are 0-9"),
            },
        },
        ("zstd", level) => Compression::Zstd {
            level: match level {
                None => 3,
                Some(l @ 1..=22) => l,
                Some(l) => bail!("--compression-level {l}: zstd levels are 1-22"),
            },
        },
        ("uncompressed" | "none", _) => Compression::None,
        (other, _) => bail!("--compression {other}: expected gzip, zstd or uncompressed"),
    })
}

pub fn parse_isolation(s: &str) -> Result<kiln_sandbox::Isolation> {
    Ok(match s {
        "auto" => kiln_sandbox::Isolation::Auto,
        "userns" => kiln_sandbox::Isolation::Userns,
        "root" => kiln_sandbox::Isolation::Root,
        "in-place" | "inplace" => kiln_sandbox::Isolation::InPlace,
        other => bail!("--isolation {other}: expected auto, userns, root or in-place"),
    })
}

/// `KILN_FORCE_IN_PLACE=1`: allow in-place builds outside a container.
pub fn force_in_place_env() -> bool {
    matches!(
        std::env::var("KILN_FORCE_IN_PLACE").as_deref(),
        Ok("1" | "true")
    )
}

/// SOURCE_DATE_EPOCH from the environment, else 0 when reproducible.
pub fn source_date_epoch(reproducible: bool) -> Result<Option<i64>> {
    Ok(match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => Some(
            v.parse::<i64>()
                .with_context(|| format!("SOURCE_DATE_EPOCH={v}: expected seconds since 1970"))?,
        ),
        _ if reproducible => Some(0),
        _ => None,
    })
}

/// Runs the job; prints the image digest on stdout.
pub fn execute(job: Job) -> Result<()> {
    // Every name is checked before anything is written.
    validate_names(&job)?;
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
    let result = build_and_export(&job, &store, &work);
    // Before the scratch space goes: what a failed write left there is
    // part of why the filesystem is full.
    let result = explain_full_cache(result, &job.cache_dir);
    crate::cleanup::discard(&job.cache_dir, &work);
    lease.release();
    result
}

/// Image names (`--tag`, `--destination`, `type=image,name=`) are valid
/// references.
fn validate_names(job: &Job) -> Result<()> {
    let mut names: Vec<&String> = job.tags.iter().chain(&job.push_to).collect();
    for o in &job.outputs {
        if let Output::Image { names: n, .. } = o {
            names.extend(n);
        }
    }
    for name in names {
        name.parse::<kiln_registry::Reference>()
            .with_context(|| format!("invalid image name {name:?}"))?;
    }
    Ok(())
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

fn build_and_export(job: &Job, store: &BlobStore, work: &Path) -> Result<()> {
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
    let mut built: Vec<kiln_build::BuildOutput> = Vec::new();
    let mut cache_entries = Vec::new();
    let mut cache_mounts: Vec<(String, PathBuf)> = Vec::new();
    for (i, platform) in job.platforms.iter().enumerate() {
        if multi {
            progress.info(&format!("building for {}", platform_name(platform)));
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
            &job.push_to,
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
                    format: job.format,
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
            built_one.with_context(|| format!("building for {}", platform_name(platform)))?
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
            out.stored = kiln_image::store_image(store, &out.image, job.format)?;
        }
        cache_entries.extend(out.cache_entries.iter().cloned());
        cache_mounts.extend(out.cache_mounts.iter().cloned());
        built.push(out);
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

    let result = if multi {
        let images: Vec<_> = built.iter().map(|b| b.stored.clone()).collect();
        let index = store_index(store, &images, job.format)?;
        for output in &job.outputs {
            export_index(store, output, &index, &built, &job.tags, work)?;
            eprintln!("exported {}", describe(output));
        }
        let mut pushed = Vec::new();
        for dest in &job.push_to {
            pushed.push(push_index(
                &registry,
                runtime.handle(),
                store,
                &index,
                &images,
                dest,
                &progress,
            )?);
        }
        Exported {
            descriptor: index,
            config: None,
            pushed,
        }
    } else {
        let Some(out) = built.first() else {
            bail!("no image was built");
        };
        for output in &job.outputs {
            export(store, output, &out.image, &out.stored, &job.tags)?;
            eprintln!("exported {}", describe(output));
        }
        let pushed = kiln_build::registry::push_all(
            &registry,
            runtime.handle(),
            store,
            &out.stored,
            &job.push_to,
            &progress,
        )?;
        Exported {
            descriptor: out.stored.manifest.clone(),
            config: Some(out.stored.config_digest.to_string()),
            pushed,
        }
    };
    let digest = result.descriptor.digest.to_string();
    if let Some(path) = &job.digest_file {
        write_file(path, digest.as_bytes())?;
    }
    if let Some(path) = &job.image_name_with_digest_file {
        // Kaniko's format: `repository@digest`, one line per destination.
        let mut text = String::new();
        for dest in &job.push_to {
            text.push_str(&format!("{}@{digest}\n", repository_of(dest)));
        }
        write_file(path, text.as_bytes())?;
    }
    if let Some(path) = &job.image_name_tag_with_digest_file {
        // Kaniko's format: `repository:tag@digest`, one line per destination.
        let mut text = String::new();
        for dest in &job.push_to {
            text.push_str(&format!("{}@{digest}\n", with_tag(dest)));
        }
        write_file(path, text.as_bytes())?;
    }
    if let Some(path) = &job.metadata_file {
        let mut meta = serde_json::json!({
            "containerimage.digest": digest,
            "containerimage.descriptor": result.descriptor,
            "image.name": job.tags.join(","),
            "pushed": result.pushed.iter().map(|(n, d)| format!("{n}@{d}")).collect::<Vec<_>>(),
        });
        if let (Some(c), Some(m)) = (&result.config, meta.as_object_mut()) {
            m.insert("containerimage.config.digest".into(), c.clone().into());
        }
        write_file(path, serde_json::to_string_pretty(&meta)?.as_bytes())?;
    }
    println!("{digest}");
    Ok(())
}

/// What a build produced, for the result files.
struct Exported {
    /// The image manifest, or the index of a multi-platform build.
    descriptor: Descriptor,
    /// The config digest (single-platform builds).
    config: Option<String>,
    pushed: Vec<(String, kiln_image::Digest)>,
}

fn platform_name(p: &Platform) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
        None => format!("{}/{}", p.os, p.architecture),
    }
}

/// Writes the index over `images` (in platform order) into the store, with the
/// media type of `format`'s family, and returns its descriptor.
fn store_index(store: &BlobStore, images: &[StoredImage], format: Format) -> Result<Descriptor> {
    let media_type = match format {
        Format::Oci => MT_OCI_INDEX,
        Format::Docker => MT_DOCKER_MANIFEST_LIST,
    };
    let index = Index {
        media_type: Some(media_type.to_string()),
        manifests: images.iter().map(|i| i.manifest.clone()).collect(),
        ..Index::default()
    };
    let bytes = serde_json::to_vec(&index).context("serialising the image index")?;
    let digest = store.put_bytes(&bytes)?;
    Ok(Descriptor::new(media_type, digest, bytes.len() as u64))
}

/// Writes a multi-platform image to a file or directory output: OCI layouts and
/// archives hold the index; `type=local` writes one directory per platform
/// (`linux_amd64/`, as BuildKit does); docker archives and filesystem tars hold one
/// image only.
fn export_index(
    store: &BlobStore,
    output: &Output,
    index: &Descriptor,
    built: &[kiln_build::BuildOutput],
    tags: &[String],
    work: &Path,
) -> Result<()> {
    let images: Vec<(StoredImage, Option<String>)> =
        built.iter().map(|b| (b.stored.clone(), None)).collect();
    let ref_name = tags.first().map(|t| kiln_build::output::ref_name_of(t));
    match output {
        Output::Oci {
            dest,
            archive: false,
        } => write_index_layout(store, dest, &images, index, ref_name.as_deref()),
        Output::Oci {
            dest,
            archive: true,
        } => {
            // The layout is assembled beside the build, then written as one
            // deterministic tar by kiln-image's tar writer.
            let layout = work.join("index-layout");
            let _ = std::fs::remove_dir_all(&layout);
            write_index_layout(store, &layout, &images, index, ref_name.as_deref())?;
            let entries = layout_entries(&layout)?;
            let tar = kiln_image::write_layer(
                store,
                entries,
                &kiln_image::LayerOptions {
                    compression: kiln_image::Compression::None,
                    ..Default::default()
                },
            )?;
            move_out_of_store(store, &tar.digest, dest)
        }
        Output::Local { dest } => {
            for b in built {
                let p = b.stored.manifest.platform.clone().unwrap_or_default();
                let one = Output::Local {
                    dest: dest.join(platform_name(&p).replace('/', "_")),
                };
                export(store, &one, &b.image, &b.stored, tags)?;
            }
            Ok(())
        }
        Output::Docker { .. } | Output::Tar { .. } => bail!(
            "{} holds one image: build one --platform for it, or use type=oci / type=local",
            describe(output)
        ),
        Output::Image { .. } => Ok(()),
    }
}

/// Writes (or updates) the OCI layout `dir` so that it holds the index `index` over
/// `images`, named `ref_name` (replacing an entry of that name).
fn write_index_layout(
    store: &BlobStore,
    dir: &Path,
    images: &[(StoredImage, Option<String>)],
    index: &Descriptor,
    ref_name: Option<&str>,
) -> Result<()> {
    // kiln-image links every image's blobs and lists the images unnamed; the
    // index then takes their place in index.json.
    kiln_image::write_oci_layout(store, dir, images)?;
    let blob = dir.join("blobs").join("sha256").join(index.digest.hex());
    if !blob.is_file() {
        let src = store.path(&index.digest);
        if std::fs::hard_link(&src, &blob).is_err() {
            std::fs::copy(&src, &blob)
                .with_context(|| format!("copying the index into {}", blob.display()))?;
        }
    }
    let index_path = dir.join("index.json");
    let text =
        std::fs::read(&index_path).with_context(|| format!("reading {}", index_path.display()))?;
    let mut top: Index = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not an OCI index", index_path.display()))?;
    let platform_digests: Vec<&kiln_image::Digest> =
        images.iter().map(|(i, _)| &i.manifest.digest).collect();
    top.manifests.retain(|m| match m.ref_name() {
        None => !platform_digests.contains(&&m.digest) && m.digest != index.digest,
        Some(n) => Some(n) != ref_name,
    });
    let mut entry = index.clone();
    if let Some(n) = ref_name {
        entry
            .annotations
            .insert(kiln_image::ANNOTATION_REF_NAME.to_string(), n.to_string());
    }
    top.manifests.push(entry);
    let bytes = serde_json::to_vec(&top).context("serialising index.json")?;
    write_file(&index_path, &bytes)
}

/// The files of an OCI layout directory as tar entries (root-owned, mtime 0, as
/// kiln-image writes OCI archives).
fn layout_entries(layout: &Path) -> Result<Vec<kiln_image::LayerEntry>> {
    let entry = |path: &str, kind: kiln_image::EntryKind| kiln_image::LayerEntry {
        mode: if kind == kiln_image::EntryKind::Dir {
            0o755
        } else {
            0o644
        },
        path: path.to_string(),
        kind,
        uid: 0,
        gid: 0,
        mtime: 0,
        xattrs: Vec::new(),
    };
    let file = |rel: &str| -> Result<kiln_image::LayerEntry> {
        let source = layout.join(rel);
        let size = std::fs::metadata(&source)
            .with_context(|| format!("reading {}", source.display()))?
            .len();
        Ok(entry(rel, kiln_image::EntryKind::File { source, size }))
    };
    let mut entries = vec![
        entry("blobs", kiln_image::EntryKind::Dir),
        entry("blobs/sha256", kiln_image::EntryKind::Dir),
        file("oci-layout")?,
        file("index.json")?,
    ];
    let blobs = layout.join("blobs").join("sha256");
    let mut names: Vec<String> = std::fs::read_dir(&blobs)
        .with_context(|| format!("reading {}", blobs.display()))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("reading {}", blobs.display()))?;
    names.sort();
    for n in names {
        entries.push(file(&format!("blobs/sha256/{n}"))?);
    }
    Ok(entries)
}

/// Moves a blob the build wrote only to hand it out (an OCI archive) from the store
/// to `dest`, atomically.
fn move_out_of_store(store: &BlobStore, digest: &kiln_image::Digest, dest: &Path) -> Result<()> {
    let src = store.path(digest);
    if std::fs::rename(&src, dest).is_ok() {
        return Ok(());
    }
    let mut tmp = dest.as_os_str().to_owned();
    tmp.push(".kiln-tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::copy(&src, &tmp).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, dest).with_context(|| format!("writing {}", dest.display()))?;
    let _ = std::fs::remove_file(&src);
    Ok(())
}

/// Pushes a multi-platform image to `dest`; returns the name and index digest.
fn push_index(
    client: &kiln_registry::RegistryClient,
    runtime: &tokio::runtime::Handle,
    store: &BlobStore,
    index: &Descriptor,
    images: &[StoredImage],
    dest: &str,
    progress: &dyn kiln_build::progress::Progress,
) -> Result<(String, kiln_image::Digest)> {
    let parsed: kiln_registry::Reference = dest.parse().with_context(|| dest.to_string())?;
    let report = kiln_build::registry::TransferReport::new(progress, "pushed");
    let t = std::time::Instant::now();
    progress.info(&format!("pushing {parsed} ({} platforms)", images.len()));
    let digest = runtime
        .block_on(client.push_index(store, index, images, &parsed, &report))
        .with_context(|| format!("pushing {parsed}"))?;
    progress.info(&format!(
        "pushed {parsed}@{digest}: {} in {:.2}s",
        report.summary(),
        t.elapsed().as_secs_f64()
    ));
    Ok((parsed.to_string(), digest))
}

/// `host/repo:tag` → `host/repo` (a digest suffix is dropped too).
pub fn repository_of(name: &str) -> String {
    let name = name.split('@').next().unwrap_or(name);
    let slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
    match name[slash..].rfind(':') {
        Some(i) => name[..slash + i].to_string(),
        None => name.to_string(),
    }
}

/// The name with its tag, `latest` when none is written.
fn with_tag(name: &str) -> String {
    let name = name.split('@').next().unwrap_or(name);
    let slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
    if name[slash..].contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

fn describe(o: &Output) -> String {
    match o {
        Output::Oci {
            dest,
            archive: false,
        } => format!("OCI layout {}", dest.display()),
        Output::Oci {
            dest,
            archive: true,
        } => format!("OCI archive {}", dest.display()),
        Output::Docker { dest } => format!("docker archive {}", dest.display()),
        Output::Local { dest } => format!("filesystem to {}", dest.display()),
        Output::Tar { dest } => format!("filesystem tar {}", dest.display()),
        Output::Image { names, .. } => format!("image {}", names.join(", ")),
    }
}

/// Writes a small result file atomically.
fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".kiln-tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Built-in cloud registry auth settings (both front-ends).
#[derive(clap::Args, Debug, Default)]
pub struct CloudFlags {
    /// Treat a registry host as a cloud registry for built-in auth:
    /// HOST=ecr:ACCOUNT:REGION, HOST=ecr-fips:ACCOUNT:REGION, HOST=gcr or HOST=acr
    /// (for registries behind a proxy or private DNS name); repeatable.
    /// Also read from KILN_CLOUD_REGISTRIES (comma-separated).
    #[arg(long = "cloud-registry")]
    pub cloud_registries: Vec<String>,
    /// Do not authenticate to ECR, GCR/Artifact Registry or ACR by kiln's
    /// built-in providers (docker config.json still applies).
    #[arg(long)]
    pub no_cloud_auth: bool,
}

/// TLS settings per registry, shared by both front-ends.
#[derive(Debug, Default)]
pub struct TlsFlags<'a> {
    /// `HOST=CA.pem` values of `--registry-certificate`.
    pub certificates: &'a [String],
    /// `HOST=CERT,KEY` values of `--registry-client-cert`.
    pub client_certs: &'a [String],
    /// Relax TLS for every pull (Kaniko's `--insecure-pull` / `--skip-tls-verify-pull`).
    pub insecure_pull: bool,
}

/// Registry settings shared by both front-ends.
pub fn registry_options(
    insecure: Vec<String>,
    mirrors: &[String],
    maps: &[String],
    tls: &TlsFlags<'_>,
    cloud: &CloudFlags,
) -> Result<kiln_registry::RegistryOptions> {
    let mut opts = kiln_registry::RegistryOptions {
        insecure,
        insecure_pull: tls.insecure_pull,
        cloud_auth: !cloud.no_cloud_auth,
        ..Default::default()
    };
    for c in tls.client_certs {
        let (host, cert) = kiln_registry::ClientCert::parse_flag(c)?;
        opts.client_certs.insert(host, cert);
    }
    let mut overrides: Vec<String> = cloud.cloud_registries.clone();
    if let Ok(env) = std::env::var("KILN_CLOUD_REGISTRIES") {
        overrides.extend(env.split(',').filter(|s| !s.is_empty()).map(str::to_string));
    }
    for o in &overrides {
        let (host, kind) = kiln_registry::parse_cloud_override(o)
            .with_context(|| format!("--cloud-registry {o}"))?;
        opts.cloud_registries.insert(host, kind);
    }
    if !mirrors.is_empty() {
        // Kaniko's --registry-mirror mirrors Docker Hub.
        opts.mirrors
            .insert("docker.io".to_string(), mirrors.to_vec());
    }
    for m in maps {
        let (from, to) = m
            .split_once('=')
            .with_context(|| format!("--registry-map {m}: expected ORIGINAL=REPLACEMENT"))?;
        opts.registry_map.insert(from.to_string(), to.to_string());
    }
    let mut cas = HashMap::new();
    for c in tls.certificates {
        let (host, path) = c
            .split_once('=')
            .with_context(|| format!("--registry-certificate {c}: expected HOST=PATH"))?;
        cas.insert(host.to_string(), PathBuf::from(path));
    }
    opts.ca_files = cas;
    Ok(opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_lists() {
        let v = parse_platforms("--platform", "linux/amd64, linux/arm64/v8").unwrap_or_default();
        assert_eq!(
            v,
            vec![
                Platform::new("linux", "amd64", None),
                Platform::new("linux", "arm64", Some("v8"))
            ]
        );
        let e = parse_platforms("--platform", "linux/amd64,linux/amd64")
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("--platform linux/amd64,linux/amd64: linux/amd64 is given twice")
        );
        assert!(parse_platforms("--platform", "linux/amd64,").is_err());
    }

    #[test]
    fn digest_file_names() {
        assert_eq!(repository_of("localhost:5000/a/b:v1"), "localhost:5000/a/b");
        assert_eq!(repository_of("localhost:5000/a/b"), "localhost:5000/a/b");
        assert_eq!(with_tag("localhost:5000/a/b"), "localhost:5000/a/b:latest");
        assert_eq!(with_tag("reg.io/x:1"), "reg.io/x:1");
    }
}
