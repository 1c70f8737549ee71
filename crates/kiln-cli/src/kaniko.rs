//! `kiln executor`: Kaniko's executor command line with Kaniko's meanings
//! and defaults, so an existing Kaniko Job works by swapping the image. The
//! binary also answers to the name `executor` (`/kaniko/executor`).
//!
//! Every flag of the last Kaniko release is accepted. Flags whose effect
//! kiln provides differently (or not yet) print a warning when they would
//! change the result; flags that only tune Kaniko's internals are accepted
//! quietly. `docs/kaniko-flags.md` lists each one with its status.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::{ArgAction, Args};
use kiln_build::progress::ProgressMode;
use kiln_export::{ExportPlan, Output, ResultFiles};
use kiln_image::Format;

use crate::flags;
use crate::job::{self, Job};

/// Kaniko's executor flags. Booleans take Kaniko's `--flag` or
/// `--flag=true|false` forms.
#[derive(Args, Debug)]
pub struct KanikoArgs {
    /// Path to the Dockerfile (relative to the context when not found as given).
    #[arg(short = 'f', long, default_value = "Dockerfile")]
    pub dockerfile: String,
    /// The build context: a directory or dir://DIR.
    #[arg(short = 'c', long, default_value = "/workspace/")]
    pub context: String,
    /// A sub-directory of the context to build from.
    #[arg(long)]
    pub context_sub_path: Option<String>,
    /// Registry destination(s) to push to; repeatable.
    #[arg(short = 'd', long = "destination")]
    pub destinations: Vec<String>,
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    #[arg(long)]
    pub target: Option<String>,
    #[arg(long = "label")]
    pub labels: Vec<String>,
    #[arg(long = "custom-platform", alias = "customPlatform")]
    pub custom_platform: Option<String>,
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub no_push: Option<bool>,
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub no_push_cache: Option<bool>,
    /// Write the image as a docker-archive tarball here.
    #[arg(long = "tar-path", alias = "tarPath")]
    pub tar_path: Option<PathBuf>,
    /// Write the image as an OCI layout here.
    #[arg(long)]
    pub oci_layout_path: Option<PathBuf>,
    #[arg(long)]
    pub digest_file: Option<PathBuf>,
    #[arg(long)]
    pub image_name_with_digest_file: Option<PathBuf>,
    #[arg(long)]
    pub image_name_tag_with_digest_file: Option<PathBuf>,
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub reproducible: Option<bool>,
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub cache: Option<bool>,
    #[arg(long)]
    pub cache_repo: Option<String>,
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    #[arg(long)]
    pub cache_ttl: Option<String>,
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub cache_copy_layers: Option<bool>,
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub cache_run_layers: Option<bool>,
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub compressed_caching: Option<bool>,
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub cleanup: Option<bool>,
    #[arg(long)]
    pub compression: Option<String>,
    #[arg(long)]
    pub compression_level: Option<i32>,
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub force: Option<bool>,
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub force_build_metadata: Option<bool>,
    /// Git options: branch=NAME,single-branch=BOOL,recurse-submodules=BOOL,insecure-skip-tls=BOOL.
    #[arg(long)]
    pub git: Option<String>,
    #[arg(long = "ignore-path")]
    pub ignore_paths: Vec<String>,
    #[arg(long, alias = "whitelist-var-run", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub ignore_var_run: Option<bool>,
    #[arg(long)]
    pub image_download_retry: Option<u32>,
    #[arg(long)]
    pub image_fs_extract_retry: Option<u32>,
    #[arg(long)]
    pub push_retry: Option<u32>,
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub insecure: Option<bool>,
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub insecure_pull: Option<bool>,
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub skip_tls_verify: Option<bool>,
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub skip_tls_verify_pull: Option<bool>,
    #[arg(long = "skip-tls-verify-registry")]
    pub skip_tls_verify_registries: Vec<String>,
    #[arg(long = "registry-certificate")]
    pub registry_certificates: Vec<String>,
    #[arg(long = "registry-client-cert")]
    pub registry_client_certs: Vec<String>,
    #[arg(long = "registry-mirror")]
    pub registry_mirrors: Vec<String>,
    #[arg(long = "registry-map")]
    pub registry_maps: Vec<String>,
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub skip_default_registry_fallback: Option<bool>,
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub skip_push_permission_check: Option<bool>,
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub push_ignore_immutable_tag_errors: Option<bool>,
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub single_snapshot: Option<bool>,
    #[arg(long = "snapshot-mode", alias = "snapshotMode")]
    pub snapshot_mode: Option<String>,
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub skip_unused_stages: Option<bool>,
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub use_new_run: Option<bool>,
    #[arg(long)]
    pub kaniko_dir: Option<PathBuf>,
    /// panic, fatal, error, warn, info, debug or trace.
    #[arg(short = 'v', long, default_value = "info")]
    pub verbosity: String,
    /// text, color or json.
    #[arg(long, default_value = "color")]
    pub log_format: String,
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub log_timestamp: Option<bool>,
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub preserve_context: Option<bool>,
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub materialize: Option<bool>,
    #[command(flatten)]
    pub cloud: flags::CloudFlags,
    /// kiln extension: a secret for RUN --mount=type=secret (id=ID,src=PATH|env=VAR).
    #[arg(long = "secret")]
    pub secrets: Vec<String>,
    /// kiln extension: how RUN steps are isolated (auto, userns, root, in-place).
    #[arg(long, default_value = "auto", env = "KILN_ISOLATION")]
    pub isolation: String,
}

fn on(flag: Option<bool>) -> bool {
    flag.unwrap_or(false)
}

fn warn(message: &str) {
    eprintln!("warning: {message}");
}

/// Host (registry) part of an image name, for per-registry settings.
fn registry_of(name: &str) -> Option<String> {
    let first = name.split('/').next()?;
    let is_host =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    is_host.then(|| first.to_string())
}

pub fn run(args: KanikoArgs) -> Result<()> {
    let no_push = on(args.no_push);
    if args.destinations.is_empty() && !no_push {
        bail!("you must provide --destination, or use --no-push");
    }
    // Flags kiln accepts but whose Kaniko behaviour it does not reproduce
    // yet, when they would change the result or the run.
    if on(args.single_snapshot) {
        warn("--single-snapshot: kiln writes one layer per step; the filesystem is the same");
    }
    if let Some(mode) = &args.snapshot_mode {
        match mode.as_str() {
            "full" | "redo" | "time" => {}
            other => bail!("--snapshot-mode {other}: expected full, redo or time"),
        }
    }
    let progress = match args.log_format.as_str() {
        "json" => ProgressMode::Json,
        "text" | "color" => ProgressMode::Plain,
        other => bail!("--log-format {other}: expected text, color or json"),
    };
    match args.verbosity.as_str() {
        "panic" | "fatal" | "error" | "warn" | "info" | "debug" | "trace" => {}
        other => {
            bail!("--verbosity {other}: expected panic, fatal, error, warn, info, debug or trace")
        }
    }

    let build_args = flags::parse_kv_list("--build-arg", &args.build_args, true)?;
    let labels = flags::parse_kv_list("--label", &args.labels, false)?;
    let context = args.context.clone();
    // Kaniko resolves a relative --dockerfile against a local context when
    // it does not exist as given; remote contexts resolve it inside
    // themselves (kiln-context).
    let dockerfile = {
        let given = PathBuf::from(&args.dockerfile);
        let local = local_dir(&context);
        match local {
            Some(dir) if !(given.is_absolute() || given.exists()) => {
                let base = match &args.context_sub_path {
                    Some(sub) => Path::new(dir).join(sub),
                    None => Path::new(dir).to_path_buf(),
                };
                base.join(&args.dockerfile)
            }
            _ => given,
        }
    };
    let git = parse_git_options(args.git.as_deref().unwrap_or(""))?;

    let mut outputs = Vec::new();
    if let Some(p) = &args.tar_path {
        outputs.push(Output::Docker { dest: p.clone() });
    }
    if let Some(p) = &args.oci_layout_path {
        outputs.push(Output::Oci {
            dest: p.clone(),
            archive: false,
        });
    }
    let push_to = if no_push {
        Vec::new()
    } else {
        args.destinations.clone()
    };

    // --insecure and --skip-tls-verify apply to the destinations' registries;
    // the -pull variants to every pull (base images, COPY --from images,
    // cache imports) and never to a push.
    let mut insecure = args.insecure_registries.clone();
    insecure.extend(args.skip_tls_verify_registries.iter().cloned());
    if on(args.insecure) || on(args.skip_tls_verify) {
        insecure.extend(args.destinations.iter().filter_map(|d| registry_of(d)));
    }

    let platform = match &args.custom_platform {
        Some(p) => flags::parse_platform("--custom-platform", p)?,
        None => flags::host_platform(),
    };
    let secrets = flags::parse_secrets(&args.secrets)?;
    // KILN_CACHE_DIR wins (one cache shared by `build` and `executor`),
    // then Kaniko's working directory, then the user's cache directory.
    let cache_dir = match (std::env::var_os("KILN_CACHE_DIR"), &args.kaniko_dir) {
        (Some(d), _) if !d.is_empty() => PathBuf::from(d),
        (_, Some(d)) => d.join("kiln-cache"),
        _ => flags::default_cache_dir(),
    };
    job::execute(Job {
        context,
        context_sub_path: args.context_sub_path.clone(),
        git,
        dockerfile: Some(dockerfile),
        build_args,
        target: args.target.clone(),
        platforms: vec![platform],
        labels,
        progress,
        cache_dir,
        // Kaniko has no such flag: KILN_JOBS, else one stage per CPU.
        jobs: std::env::var("KILN_JOBS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        // Kaniko caches only with --cache=true; its TTL defaults to two weeks.
        cache: job::CacheSettings {
            local: on(args.cache),
            lookup: on(args.cache),
            repo: repo_cache(&args),
            from: Vec::new(),
            to: Vec::new(),
            ttl: Some(flags::parse_ttl(
                "--cache-ttl",
                args.cache_ttl.as_deref().unwrap_or("336h"),
            )?),
        },
        source_date_epoch: flags::source_date_epoch(on(args.reproducible))?,
        compression: flags::parse_compression(
            args.compression.as_deref().unwrap_or("gzip"),
            args.compression_level,
        )?,
        secrets,
        ssh: BTreeMap::new(),
        isolation: flags::parse_isolation(&args.isolation)?,
        ignore_paths: args.ignore_paths.iter().map(PathBuf::from).collect(),
        force_in_place: on(args.force) || flags::force_in_place_env(),
        allow_insecure: false,
        registry: flags::registry_options(
            insecure,
            &args.registry_mirrors,
            &args.registry_maps,
            &flags::TlsFlags {
                certificates: &args.registry_certificates,
                client_certs: &args.registry_client_certs,
                insecure_pull: on(args.insecure_pull) || on(args.skip_tls_verify_pull),
            },
            &args.cloud,
        )?,
        export: ExportPlan {
            tags: args.destinations.clone(),
            push_to,
            outputs,
            format: Format::Docker,
            files: ResultFiles {
                digest: args.digest_file.clone(),
                metadata: None,
                image_name_with_digest: args.image_name_with_digest_file.clone(),
                image_name_tag_with_digest: args.image_name_tag_with_digest_file.clone(),
            },
        },
    })
}

/// Kaniko's registry cache: with `--cache=true`, `--cache-repo` or, when
/// absent, `<first destination's repository>/cache`; COPY layers only with
/// `--cache-copy-layers`, RUN layers unless `--cache-run-layers=false`.
fn repo_cache(args: &KanikoArgs) -> Option<job::RepoCacheSettings> {
    if !on(args.cache) {
        return None;
    }
    let repo = match &args.cache_repo {
        Some(r) => r.clone(),
        None => {
            let dest = args.destinations.first()?;
            format!("{}/cache", kiln_export::repository_of(dest))
        }
    };
    Some(job::RepoCacheSettings {
        repo,
        push: !on(args.no_push_cache),
        copy_layers: on(args.cache_copy_layers),
        run_layers: args.cache_run_layers.unwrap_or(true),
    })
}

/// The directory of a local context (`DIR` or `dir://DIR`), `None` for
/// remote ones.
fn local_dir(context: &str) -> Option<&str> {
    if let Some(d) = context.strip_prefix("dir://") {
        return Some(d);
    }
    if context.contains("://") || context == "-" {
        return None;
    }
    Path::new(context).is_dir().then_some(context)
}

/// Kaniko's `--git branch=NAME,single-branch=BOOL,recurse-submodules=BOOL,insecure-skip-tls=BOOL`.
fn parse_git_options(spec: &str) -> Result<kiln_context::GitOptions> {
    let mut git = kiln_context::GitOptions::default();
    let flag = |k: &str, v: &str| -> Result<bool> {
        match v {
            "true" => Ok(true),
            "false" => Ok(false),
            other => bail!("--git {k}={other}: expected true or false"),
        }
    };
    for field in spec.split(',').filter(|f| !f.is_empty()) {
        let (k, v) = field
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--git {field}: expected KEY=VALUE"))?;
        match k {
            "branch" => git.branch = Some(v.to_string()),
            "single-branch" => git.single_branch = flag(k, v)?,
            "recurse-submodules" => git.recurse_submodules = flag(k, v)?,
            "insecure-skip-tls" => {
                if flag(k, v)? {
                    warn("--git insecure-skip-tls=true: kiln verifies TLS for git; use a CA bundle instead");
                }
            }
            other => bail!("--git {other}: unknown option (branch, single-branch, recurse-submodules, insecure-skip-tls)"),
        }
    }
    Ok(git)
}

#[cfg(test)]
mod tests {
    use super::{parse_git_options, registry_of};

    #[test]
    fn git_options() {
        let g = parse_git_options("branch=dev,single-branch=true,recurse-submodules=false")
            .unwrap_or_default();
        assert_eq!(g.branch.as_deref(), Some("dev"));
        assert!(g.single_branch);
        assert!(!g.recurse_submodules);
        assert!(parse_git_options("branch").is_err());
        assert!(parse_git_options("depth=1").is_err());
        assert!(parse_git_options("single-branch=maybe").is_err());
    }

    #[test]
    fn registries() {
        assert_eq!(
            registry_of("localhost:5000/a:b").as_deref(),
            Some("localhost:5000")
        );
        assert_eq!(registry_of("gcr.io/p/i").as_deref(), Some("gcr.io"));
        assert_eq!(registry_of("library/busybox"), None);
        assert_eq!(registry_of("busybox"), None);
    }
}
