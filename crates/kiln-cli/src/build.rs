//! `kiln build`: flags in the style of `docker buildx build`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use kiln_build::output::{export, parse_output, Output};
use kiln_build::progress::{ProgressMode, StderrProgress};
use kiln_build::BuildRequest;
use kiln_image::{BlobStore, Compression, Format, Platform};

#[derive(Args)]
pub struct BuildArgs {
    /// The build context: a directory.
    pub context: PathBuf,
    /// The Dockerfile (default: CONTEXT/Dockerfile; `-` reads standard input).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Name (and tag) of the image; repeatable.
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// A build argument KEY=VALUE (KEY alone takes the value from the environment); repeatable.
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// The stage to build (default: the last).
    #[arg(long)]
    pub target: Option<String>,
    /// The platform to build for (os/arch[/variant]; default: this machine's).
    #[arg(long)]
    pub platform: Option<String>,
    /// An image label KEY=VALUE; repeatable.
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Where the image goes: type=oci|docker|local|tar|image,dest=…|name=…; repeatable.
    /// Default: an OCI layout in ./kiln-out.
    #[arg(short = 'o', long = "output")]
    pub outputs: Vec<String>,
    /// Push the image to every --tag.
    #[arg(long)]
    pub push: bool,
    /// Progress output: auto, plain, json or quiet.
    #[arg(long, default_value = "auto")]
    pub progress: String,
    /// Write the image (manifest) digest to this file.
    #[arg(long)]
    pub iidfile: Option<PathBuf>,
    /// Write build metadata (digest, descriptor, names) as JSON to this file.
    #[arg(long)]
    pub metadata_file: Option<PathBuf>,
    /// Where kiln keeps blobs and scratch space.
    #[arg(long, env = "KILN_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Reproducible output: timestamps fixed to SOURCE_DATE_EPOCH (0 when unset).
    #[arg(long)]
    pub reproducible: bool,
    /// Image media types: oci or docker (Docker v2 schema 2).
    #[arg(long, default_value = "oci")]
    pub format: String,
    /// Layer compression: gzip, zstd or uncompressed.
    #[arg(long, default_value = "gzip")]
    pub compression: String,
    /// Compression level (gzip 0-9, zstd 1-22).
    #[arg(long)]
    pub compression_level: Option<i32>,
    /// A secret for RUN --mount=type=secret: id=ID,src=PATH|env=VAR; repeatable.
    #[arg(long = "secret")]
    pub secrets: Vec<String>,
    /// An SSH agent for RUN --mount=type=ssh: default|ID[=SOCKET]; repeatable.
    #[arg(long = "ssh")]
    pub ssh: Vec<String>,
    /// How RUN steps are isolated: auto, userns or root.
    #[arg(long, default_value = "auto", env = "KILN_ISOLATION")]
    pub isolation: String,
    /// Speak plain HTTP / unverified TLS to this registry (HOST[:PORT]); repeatable.
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
}

fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(x).join("kiln");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".cache").join("kiln");
    }
    std::env::temp_dir().join("kiln-cache")
}

fn host_platform() -> Platform {
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

fn parse_platform(s: &str) -> Result<Platform> {
    let parts: Vec<&str> = s.split('/').collect();
    match parts.as_slice() {
        [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform::new(os, arch, None)),
        [os, arch, variant] if !os.is_empty() && !arch.is_empty() => {
            Ok(Platform::new(os, arch, Some(variant)))
        }
        _ => bail!("--platform {s}: expected os/arch[/variant], e.g. linux/amd64"),
    }
}

fn parse_kv(flag: &str, raw: &str, from_env: bool) -> Result<(String, String)> {
    match raw.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        None if from_env && !raw.is_empty() => match std::env::var(raw) {
            Ok(v) => Ok((raw.to_string(), v)),
            Err(_) => bail!("{flag} {raw}: not set in the environment"),
        },
        _ => bail!("{flag} {raw}: expected KEY=VALUE"),
    }
}

pub fn run(args: BuildArgs) -> Result<()> {
    if args.push && args.tags.is_empty() {
        bail!("--push needs at least one --tag naming where to push");
    }
    let mut secrets = BTreeMap::new();
    for s in &args.secrets {
        let (id, src) = kiln_build::run::SecretSource::parse(s)?;
        secrets.insert(id, src);
    }
    let mut ssh = BTreeMap::new();
    for s in &args.ssh {
        let (id, sock) = kiln_build::run::parse_ssh(s)?;
        ssh.insert(id, sock);
    }
    let isolation = match args.isolation.as_str() {
        "auto" => kiln_sandbox::Isolation::Auto,
        "userns" => kiln_sandbox::Isolation::Userns,
        "root" => kiln_sandbox::Isolation::Root,
        other => bail!("--isolation {other}: expected auto, userns or root"),
    };
    let mode = match args.progress.as_str() {
        "auto" | "tty" | "plain" => ProgressMode::Plain,
        "json" => ProgressMode::Json,
        "quiet" => ProgressMode::Quiet,
        other => bail!("--progress {other}: expected auto, plain, json or quiet"),
    };
    let format = match args.format.as_str() {
        "oci" => Format::Oci,
        "docker" => Format::Docker,
        other => bail!("--format {other}: expected oci or docker"),
    };
    let compression = match (args.compression.as_str(), args.compression_level) {
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
    };
    let mut build_args = BTreeMap::new();
    for a in &args.build_args {
        let (k, v) = parse_kv("--build-arg", a, true)?;
        build_args.insert(k, v);
    }
    let mut labels = BTreeMap::new();
    for l in &args.labels {
        let (k, v) = parse_kv("--label", l, false)?;
        labels.insert(k, v);
    }
    let mut outputs = Vec::new();
    for o in &args.outputs {
        outputs.push(parse_output(o)?);
    }
    let mut push_to: Vec<String> = Vec::new();
    if args.push {
        push_to.extend(args.tags.iter().cloned());
    }
    for o in &outputs {
        if let Output::Image { names, push: true } = o {
            push_to.extend(names.iter().cloned());
        }
    }
    if outputs.is_empty() && push_to.is_empty() {
        outputs.push(Output::Oci {
            dest: PathBuf::from("kiln-out"),
            archive: false,
        });
    }
    let source_date_epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => Some(
            v.parse::<i64>()
                .with_context(|| format!("SOURCE_DATE_EPOCH={v}: expected seconds since 1970"))?,
        ),
        _ if args.reproducible => Some(0),
        _ => None,
    };
    let platform = match &args.platform {
        Some(p) => parse_platform(p)?,
        None => host_platform(),
    };

    let (dockerfile_name, dockerfile_text, dockerfile_path) = read_dockerfile(&args)?;
    let context = kiln_context::Context::local(&args.context, dockerfile_path.as_deref())?;

    let cache_dir = args.cache_dir.clone().unwrap_or_else(default_cache_dir);
    let store = BlobStore::open(&cache_dir)
        .with_context(|| format!("opening the cache directory {}", cache_dir.display()))?;
    let work = tempfile_dir(&cache_dir)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the I/O runtime")?;
    let http = kiln_build::fetch::HttpFetcher::new(runtime.handle().clone())?;
    let progress = StderrProgress::new(mode);
    let registry = kiln_registry::RegistryClient::new(kiln_registry::RegistryOptions {
        insecure: args.insecure_registries.clone(),
        ..Default::default()
    })?;
    let resolver = kiln_build::registry::RegistryImages {
        client: &registry,
        runtime: runtime.handle().clone(),
        progress: &progress,
    };
    let request = BuildRequest {
        dockerfile_name,
        dockerfile: dockerfile_text,
        context: &context,
        build_args,
        target: args.target.clone(),
        platform,
        build_platform: host_platform(),
        labels,
        store: &store,
        work_dir: work.clone(),
        compression,
        format,
        source_date_epoch,
        resolver: &resolver,
        http: &http,
        progress: &progress,
        isolation,
        secrets,
        ssh,
        mount_cache_dir: cache_dir.join("mounts"),
    };
    let result = kiln_build::build(&request);
    let _ = std::fs::remove_dir_all(&work);
    let out = result?;
    for arg in &out.unused_args {
        eprintln!("warning: build arg {arg} was given but no ARG instruction declares it");
    }
    for output in &outputs {
        export(&store, output, &out.image, &out.stored, &args.tags)?;
        eprintln!("exported {}", describe(output));
    }
    let pushed = kiln_build::registry::push_all(
        &registry,
        runtime.handle(),
        &store,
        &out.stored,
        &push_to,
        &progress,
    )?;
    let digest = out.stored.manifest.digest.to_string();
    if let Some(path) = &args.iidfile {
        write_file(path, digest.as_bytes())?;
    }
    if let Some(path) = &args.metadata_file {
        let meta = serde_json::json!({
            "containerimage.digest": digest,
            "containerimage.config.digest": out.stored.config_digest.to_string(),
            "containerimage.descriptor": out.stored.manifest,
            "image.name": args.tags.join(","),
            "pushed": pushed.iter().map(|(n, d)| format!("{n}@{d}")).collect::<Vec<_>>(),
        });
        write_file(path, serde_json::to_string_pretty(&meta)?.as_bytes())?;
    }
    println!("{digest}");
    Ok(())
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
    let tmp = path.with_extension("kiln-tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn tempfile_dir(cache_dir: &Path) -> Result<PathBuf> {
    let base = cache_dir.join("work");
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let dir = base.join(format!("build-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn read_dockerfile(args: &BuildArgs) -> Result<(String, String, Option<PathBuf>)> {
    match &args.file {
        Some(p) if p.as_os_str() == "-" => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the Dockerfile from standard input")?;
            Ok(("Dockerfile".into(), text, None))
        }
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading Dockerfile {}", p.display()))?;
            Ok((p.display().to_string(), text, Some(p.clone())))
        }
        None => {
            let p = args.context.join("Dockerfile");
            let text = std::fs::read_to_string(&p)
                .with_context(|| format!("reading Dockerfile {}", p.display()))?;
            Ok((p.display().to_string(), text, Some(p)))
        }
    }
}
