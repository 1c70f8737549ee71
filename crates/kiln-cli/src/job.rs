//! A build job: the normalized options both front-ends (`kiln build` and
//! the Kaniko-compatible `kiln executor`) produce, and the wiring that runs
//! it through the pipeline crates.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use kiln_build::output::{export, Output};
use kiln_build::progress::{Progress as _, ProgressMode, StderrProgress};
use kiln_build::remote_cache::{CacheSpec, CacheTransport, RepoCache};
use kiln_build::BuildRequest;
use kiln_image::{BlobStore, Compression, Format, Platform};

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
    pub platform: Platform,
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
    pub secrets: BTreeMap<String, kiln_build::run::SecretSource>,
    pub ssh: BTreeMap<String, PathBuf>,
    pub isolation: kiln_sandbox::Isolation,
    /// In-place builds: paths never touched.
    pub ignore_paths: Vec<PathBuf>,
    /// In-place builds even where nothing shows a container.
    pub force_in_place: bool,
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
pub fn parse_secrets(raw: &[String]) -> Result<BTreeMap<String, kiln_build::run::SecretSource>> {
    let mut map = BTreeMap::new();
    for s in raw {
        let (id, src) = kiln_build::run::SecretSource::parse(s)?;
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
    // Shared with other builds; `kiln cache prune` waits for none to run.
    let _lock = kiln_build::cache::CacheLock::shared(&job.cache_dir)
        .with_context(|| format!("locking the cache directory {}", job.cache_dir.display()))?;
    let store = BlobStore::open(&job.cache_dir)
        .with_context(|| format!("opening the cache directory {}", job.cache_dir.display()))?;
    let work = scratch_dir(&job.cache_dir)?;
    let result = build_and_export(&job, &store, &work);
    crate::cleanup::discard(&job.cache_dir, &work);
    result
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
    let transport = CacheTransport {
        client: &registry,
        runtime: runtime.handle().clone(),
        progress: &progress,
        platform: job.platform.clone(),
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
        platform: job.platform.clone(),
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
    let stat_cache = if job.cache.local {
        kiln_build::cache::StatCache::load(&job.cache_dir, context.root())
    } else {
        kiln_build::cache::StatCache::default()
    };
    let request = BuildRequest {
        dockerfile_name,
        dockerfile: dockerfile_text,
        context: &context,
        build_args: job.build_args.clone(),
        target: job.target.clone(),
        platform: job.platform.clone(),
        build_platform: host_platform(),
        labels: job.labels.clone(),
        store,
        work_dir: work.join("stages"),
        compression: job.compression,
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
    };
    let mut out = kiln_build::build(&request)?;
    for arg in &out.unused_args {
        eprintln!("warning: build arg {arg} was given but no ARG instruction declares it");
    }
    if job.cache.to.contains(&CacheSpec::Inline) {
        let selected = kiln_build::remote_cache::select(&out.cache_entries, false);
        kiln_build::remote_cache::inline_into(&mut out.image, &selected);
        out.stored = kiln_image::store_image(store, &out.image, job.format)?;
    }
    for spec in &job.cache.to {
        transport.export(store, spec, &out.cache_entries, &out.cache_mounts)?;
    }
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
    let digest = out.stored.manifest.digest.to_string();
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
        let meta = serde_json::json!({
            "containerimage.digest": digest,
            "containerimage.config.digest": out.stored.config_digest.to_string(),
            "containerimage.descriptor": out.stored.manifest,
            "image.name": job.tags.join(","),
            "pushed": pushed.iter().map(|(n, d)| format!("{n}@{d}")).collect::<Vec<_>>(),
        });
        write_file(path, serde_json::to_string_pretty(&meta)?.as_bytes())?;
    }
    println!("{digest}");
    Ok(())
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

fn scratch_dir(cache_dir: &Path) -> Result<PathBuf> {
    let base = cache_dir.join("work");
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let dir = base.join(format!("build-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
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

/// Registry settings shared by both front-ends.
pub fn registry_options(
    insecure: Vec<String>,
    mirrors: &[String],
    maps: &[String],
    certificates: &[String],
    cloud: &CloudFlags,
) -> Result<kiln_registry::RegistryOptions> {
    let mut opts = kiln_registry::RegistryOptions {
        insecure,
        cloud_auth: !cloud.no_cloud_auth,
        ..Default::default()
    };
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
    for c in certificates {
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
    fn digest_file_names() {
        assert_eq!(repository_of("localhost:5000/a/b:v1"), "localhost:5000/a/b");
        assert_eq!(repository_of("localhost:5000/a/b"), "localhost:5000/a/b");
        assert_eq!(with_tag("localhost:5000/a/b"), "localhost:5000/a/b:latest");
        assert_eq!(with_tag("reg.io/x:1"), "reg.io/x:1");
    }
}
