//! `kiln build`: flags in the style of `docker buildx build`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use kiln_build::progress::ProgressMode;
use kiln_export::{parse_output, ExportPlan, Output, ResultFiles};
use kiln_image::Format;

use crate::flags;
use crate::job::{self, Job};

#[derive(Args)]
pub struct BuildArgs {
    /// The build context: a directory, a tar file, `-` (a tar on stdin), an
    /// http(s) tarball, s3://, gs://, Azure Blob, or a git URL (`#ref:subdir`).
    pub context: String,
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
    /// The platform(s) to build for: os/arch[/variant], comma-separated (default:
    /// this machine's). Several platforms make one multi-platform image (an index).
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
    /// How many independent stages build at once (default: one per CPU).
    #[arg(
        long,
        env = "KILN_JOBS",
        default_value_t = 0,
        hide_default_value = true
    )]
    pub jobs: usize,
    /// Run every step: do not look anything up in the step cache (results
    /// are still stored for later builds).
    #[arg(long)]
    pub no_cache: bool,
    /// Import a cache: type=registry,ref=R | type=local,src=DIR | R; repeatable.
    #[arg(long = "cache-from")]
    pub cache_from: Vec<String>,
    /// Export the cache: type=registry,ref=R[,mode=min|max] |
    /// type=local,dest=DIR[,mode=…] | type=inline; repeatable.
    #[arg(long = "cache-to")]
    pub cache_to: Vec<String>,
    /// Cached steps older than this are rebuilt (Go duration: 336h, 30m).
    #[arg(long)]
    pub cache_ttl: Option<String>,
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
    /// How RUN steps are isolated: auto, userns, root or in-place.
    #[arg(long, default_value = "auto", env = "KILN_ISOLATION")]
    pub isolation: String,
    /// Grant an entitlement: security.insecure (lets `RUN --security=insecure`
    /// run with every capability and no seccomp filter); network.host is
    /// accepted for buildx compatibility (RUN --network=host needs nothing).
    /// Repeatable or comma-separated.
    #[arg(long = "allow")]
    pub allow: Vec<String>,
    /// In-place builds: a path the build never touches; repeatable.
    #[arg(long = "ignore-path")]
    pub ignore_paths: Vec<PathBuf>,
    /// Speak plain HTTP / unverified TLS to this registry (HOST[:PORT]); repeatable.
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    /// Pull Docker Hub images through this mirror (HOST[:PORT]); repeatable.
    #[arg(long = "registry-mirror")]
    pub registry_mirrors: Vec<String>,
    #[command(flatten)]
    pub cloud: flags::CloudFlags,
    /// Trust this CA bundle for a registry: HOST=PATH; repeatable.
    #[arg(long = "registry-certificate")]
    pub registry_certificates: Vec<String>,
    /// Present this TLS client certificate to a registry: HOST=CERT,KEY (PEM
    /// files); repeatable. Docker's /etc/docker/certs.d/HOST/client.cert and
    /// ~/.docker/certs.d/HOST/client.cert are used without it.
    #[arg(long = "registry-client-cert")]
    pub registry_client_certs: Vec<String>,
    /// Pull images (bases, COPY --from, cache imports) over unverified TLS or
    /// plain HTTP from any registry; pushes still verify TLS.
    #[arg(long)]
    pub insecure_pull: bool,
}

fn parse_cache_specs(
    specs: &[String],
    export: bool,
) -> Result<Vec<kiln_build::remote_cache::CacheSpec>> {
    specs
        .iter()
        .map(|s| kiln_build::remote_cache::CacheSpec::parse(s, export).map_err(anyhow::Error::msg))
        .collect()
}

/// `--allow`: whether `security.insecure` is granted; unknown entitlements
/// are errors.
fn allows_insecure(allow: &[String]) -> Result<bool> {
    let mut insecure = false;
    for e in allow.iter().flat_map(|a| a.split(',')).map(str::trim) {
        match e {
            "security.insecure" => insecure = true,
            "network.host" => {}
            other => bail!("--allow {other}: expected security.insecure or network.host"),
        }
    }
    Ok(insecure)
}

pub fn run(args: BuildArgs) -> Result<()> {
    if args.push && args.tags.is_empty() {
        bail!("--push needs at least one --tag naming where to push");
    }
    let secrets = flags::parse_secrets(&args.secrets)?;
    let mut ssh = BTreeMap::new();
    for s in &args.ssh {
        let (id, sock) = kiln_build::run::parse_ssh(s)?;
        ssh.insert(id, sock);
    }
    let progress = match args.progress.as_str() {
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
    let build_args = flags::parse_kv_list("--build-arg", &args.build_args, true)?;
    let labels = flags::parse_kv_list("--label", &args.labels, false)?;
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
    let platforms = match &args.platform {
        Some(p) => flags::parse_platforms("--platform", p)?,
        None => vec![flags::host_platform()],
    };
    job::execute(Job {
        context: args.context,
        context_sub_path: None,
        git: Default::default(),
        dockerfile: args.file,
        build_args,
        target: args.target,
        platforms,
        labels,
        progress,
        cache_dir: args.cache_dir.unwrap_or_else(flags::default_cache_dir),
        jobs: args.jobs,
        cache: job::CacheSettings {
            local: true,
            lookup: !args.no_cache,
            ttl: match &args.cache_ttl {
                Some(t) => Some(flags::parse_ttl("--cache-ttl", t)?),
                None => None,
            },
            repo: None,
            from: parse_cache_specs(&args.cache_from, false)?,
            to: parse_cache_specs(&args.cache_to, true)?,
        },
        source_date_epoch: flags::source_date_epoch(args.reproducible)?,
        compression: flags::parse_compression(&args.compression, args.compression_level)?,
        secrets,
        ssh,
        isolation: flags::parse_isolation(&args.isolation)?,
        ignore_paths: args.ignore_paths.clone(),
        force_in_place: flags::force_in_place_env(),
        allow_insecure: allows_insecure(&args.allow)?,
        registry: flags::registry_options(
            args.insecure_registries,
            &args.registry_mirrors,
            &[],
            &flags::TlsFlags {
                certificates: &args.registry_certificates,
                client_certs: &args.registry_client_certs,
                insecure_pull: args.insecure_pull,
            },
            &args.cloud,
        )?,
        export: ExportPlan {
            tags: args.tags,
            push_to,
            outputs,
            format,
            files: ResultFiles {
                digest: args.iidfile,
                metadata: args.metadata_file,
                image_name_with_digest: None,
                image_name_tag_with_digest: None,
            },
        },
    })
}
