//! `kiln executor`: Kaniko's executor command line with Kaniko's meanings
//! and defaults, so an existing Kaniko Job works by swapping the image. The
//! binary also answers to the name `executor` (`/kaniko/executor`).
//!
//! Every flag of the last Kaniko release is parsed, and Kaniko's
//! environment variables are read into the flags they stand for. A flag or
//! variable whose effect kiln cannot give yet is refused with a message
//! naming it (never accepted and ignored); flags that only tune Kaniko's
//! internals are accepted quietly. `docs/kaniko-flags.md` lists each one
//! with its status.

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
    /// Kaniko's GCS bucket context; kiln refuses it with the --context form to use.
    #[arg(short = 'b', long)]
    pub bucket: Option<String>,
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

/// Go's `strconv.ParseBool`, for Kaniko's boolean environment variables.
fn go_bool(var: &str, v: &str) -> Result<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        other => bail!("{var}={other}: expected true or false"),
    }
}

/// Kaniko's environment variables, folded into the flags they stand for
/// (as Kaniko does: `KANIKO_NO_PUSH` overrides `--no-push`,
/// `KANIKO_REGISTRY_MAP` and `KANIKO_REGISTRY_MIRROR` add to the flags),
/// and the ones kiln does not support refused by name.
fn apply_env(args: &mut KanikoArgs, env: &dyn Fn(&str) -> Option<String>) -> Result<()> {
    if let Some(v) = env("KANIKO_NO_PUSH") {
        args.no_push = Some(go_bool("KANIKO_NO_PUSH", &v)?);
    }
    if let Some(v) = env("KANIKO_REGISTRY_MAP").filter(|v| !v.is_empty()) {
        args.registry_maps.push(v);
    }
    if let Some(v) = env("KANIKO_REGISTRY_MIRROR").filter(|v| !v.is_empty()) {
        args.registry_mirrors.push(v);
    }
    if env("STACKLOG_PATH").is_some_and(|v| !v.is_empty()) {
        bail!("STACKLOG_PATH: kiln does not write Kaniko's goroutine stack logs; unset it (KILN_LOG=debug gives kiln's diagnostics)");
    }
    if env("BENCHMARK_FILE").is_some_and(|v| !v.is_empty() && v != "false") {
        bail!("BENCHMARK_FILE: kiln does not write Kaniko's benchmark timings (not supported yet); unset it or set it to false");
    }
    Ok(())
}

/// Kaniko's git credentials and pull method: kiln's git contexts do not
/// read them yet, so a git context with any of them set is refused.
fn refuse_git_env(context: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<()> {
    if !matches!(
        kiln_context::source::parse(context),
        Ok(kiln_context::Source::Git(_))
    ) {
        return Ok(());
    }
    for var in [
        "GIT_USERNAME",
        "GIT_PASSWORD",
        "GIT_TOKEN",
        "GIT_PULL_METHOD",
    ] {
        if env(var).is_some_and(|v| !v.is_empty()) {
            bail!("{var}: not supported yet for git contexts; put the credentials in the URL (https://TOKEN@HOST/REPO.git) and write the scheme in --context");
        }
    }
    Ok(())
}

/// Refuses the Kaniko flags kiln cannot honour yet, each with the reason,
/// instead of accepting them without effect.
fn refuse_unsupported(args: &KanikoArgs) -> Result<()> {
    if let Some(b) = &args.bucket {
        bail!("--bucket {b}: kiln reads bucket contexts directly; use --context=gs://{b}/PATH.tar.gz (or s3://BUCKET/PATH)");
    }
    if on(args.push_ignore_immutable_tag_errors) {
        bail!("--push-ignore-immutable-tag-errors: not supported yet; kiln fails a push that the registry refuses because the tag is immutable");
    }
    if on(args.skip_default_registry_fallback)
        && !(args.registry_maps.is_empty() && args.registry_mirrors.is_empty())
    {
        bail!("--skip-default-registry-fallback: not supported yet; kiln falls back to the original registry when every --registry-mirror/--registry-map fails");
    }
    if let Some(dir) = args
        .cache_repo
        .as_deref()
        .and_then(|r| r.strip_prefix("oci:"))
    {
        bail!("--cache-repo oci:{dir}: a cache repository in an OCI layout is not supported yet; use a registry repository, or `kiln build --cache-to type=local,dest={dir}`");
    }
    Ok(())
}

/// Kaniko's `--registry-map` values (`ORIG=NEW`, several separated by
/// `;`, repeatable) and `--registry-mirror`s as per-registry pull mirrors,
/// tried in the order given, then the original registry: Kaniko maps
/// pulls only, never pushes. `index.docker.io` and `registry-1.docker.io`
/// name Docker Hub, as `docker.io` does; `--registry-mirror` adds to
/// Docker Hub's list after its mappings, as Kaniko does.
pub(crate) fn registry_mirrors(
    maps: &[String],
    mirrors: &[String],
) -> Result<BTreeMap<String, Vec<String>>> {
    let hub = |h: &str| match h {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".to_string(),
        other => other.to_string(),
    };
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut add = |flag: &str, from: &str, to: &str, raw: &str| -> Result<()> {
        if from.is_empty() || to.is_empty() {
            bail!("{flag} {raw}: expected ORIGINAL=REPLACEMENT");
        }
        if from.contains('/') {
            bail!("{flag} {raw}: {from} is not a registry host");
        }
        if to.contains('/') {
            bail!("{flag} {raw}: a replacement with a repository prefix ({to}) is not supported yet; give a registry host[:port]");
        }
        let list = out.entry(hub(from)).or_default();
        let to = hub(to);
        if !list.contains(&to) {
            list.push(to);
        }
        Ok(())
    };
    for raw in maps {
        for pair in raw.split(';').filter(|p| !p.is_empty()) {
            let (from, to) = pair.split_once('=').unwrap_or((pair, ""));
            add("--registry-map", from.trim(), to.trim(), raw)?;
        }
    }
    for m in mirrors {
        add("--registry-mirror", "docker.io", m.trim(), m)?;
    }
    Ok(out)
}

/// Kaniko's `-v/--verbosity` as a tracing filter for kiln's diagnostics.
pub(crate) fn verbosity_filter(v: &str) -> Option<&'static str> {
    Some(match v {
        "panic" | "fatal" | "error" => "error",
        "warn" => "warn",
        "info" => "info",
        "debug" => "debug",
        "trace" => "trace",
        _ => return None,
    })
}

pub fn run(mut args: KanikoArgs) -> Result<()> {
    let env = |k: &str| std::env::var(k).ok();
    apply_env(&mut args, &env)?;
    refuse_unsupported(&args)?;
    refuse_git_env(&args.context, &env)?;
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
    if verbosity_filter(&args.verbosity).is_none() {
        bail!(
            "--verbosity {}: expected panic, fatal, error, warn, info, debug or trace",
            args.verbosity
        );
    }
    if on(args.cleanup) {
        eprintln!("info: --cleanup: nothing to clean; kiln builds in its own directories and removes them, and an in-place build's next run resets the root itself");
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
    // then --cache-dir (Kaniko's base-image cache: kiln keeps pulled base
    // images there), then Kaniko's working directory, then the user's cache
    // directory.
    let cache_dir = match (
        std::env::var_os("KILN_CACHE_DIR"),
        &args.cache_dir,
        &args.kaniko_dir,
    ) {
        (Some(d), _, _) if !d.is_empty() => PathBuf::from(d),
        (_, Some(d), _) => d.clone(),
        (_, _, Some(d)) => d.join("kiln-cache"),
        _ => flags::default_cache_dir(),
    };
    // Kaniko leaves /var/run out of snapshots unless --ignore-var-run=false;
    // only in-place builds see the container's /var/run.
    let mut ignore_paths: Vec<PathBuf> = args.ignore_paths.iter().map(PathBuf::from).collect();
    if args.ignore_var_run.unwrap_or(true) {
        ignore_paths.push(PathBuf::from("/var/run"));
    }
    let mirrors = registry_mirrors(&args.registry_maps, &args.registry_mirrors)?;
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
        ignore_paths,
        force_in_place: on(args.force) || flags::force_in_place_env(),
        allow_insecure: false,
        registry: kiln_registry::RegistryOptions {
            mirrors: mirrors.into_iter().collect(),
            ..flags::registry_options(
                insecure,
                &[],
                &[],
                &flags::TlsFlags {
                    certificates: &args.registry_certificates,
                    client_certs: &args.registry_client_certs,
                    insecure_pull: on(args.insecure_pull) || on(args.skip_tls_verify_pull),
                },
                &args.cloud,
            )?
        },
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
    use super::{
        apply_env, parse_git_options, refuse_git_env, refuse_unsupported, registry_mirrors,
        registry_of, verbosity_filter, KanikoArgs,
    };
    use clap::{Args, Command};

    fn parse(argv: &[&str]) -> KanikoArgs {
        let cmd = KanikoArgs::augment_args(Command::new("executor").no_binary_name(true));
        let m = cmd.try_get_matches_from(argv).expect("flags parse");
        <KanikoArgs as clap::FromArgMatches>::from_arg_matches(&m).expect("flags")
    }

    fn err(r: anyhow::Result<()>) -> String {
        r.err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn registry_maps_normalize_split_and_keep_order() {
        let m = registry_mirrors(
            &[
                "index.docker.io=m1.example;gcr.io=g1:5000".into(),
                "docker.io=m2.example".into(),
                "gcr.io=g2".into(),
            ],
            &["m3.example".into(), "m1.example".into()],
        )
        .unwrap_or_default();
        assert_eq!(
            m.get("docker.io").cloned().unwrap_or_default(),
            vec!["m1.example", "m2.example", "m3.example"]
        );
        assert_eq!(
            m.get("gcr.io").cloned().unwrap_or_default(),
            vec!["g1:5000", "g2"]
        );
        assert_eq!(m.len(), 2);
        for bad in ["gcr.io", "=x", "gcr.io=", "a/b=c"] {
            assert!(registry_mirrors(&[bad.into()], &[]).is_err(), "{bad}");
        }
        let e = registry_mirrors(&["docker.io=mirror.example/library".into()], &[])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("not supported yet"), "{e}");
    }

    #[test]
    fn kaniko_env_vars_fold_into_flags() {
        let mut a = parse(&["--no-push=false", "--registry-map=gcr.io=a"]);
        let env = |k: &str| match k {
            "KANIKO_NO_PUSH" => Some("TRUE".to_string()),
            "KANIKO_REGISTRY_MAP" => Some("quay.io=q;docker.io=d".to_string()),
            "KANIKO_REGISTRY_MIRROR" => Some("mirror.example".to_string()),
            _ => None,
        };
        assert!(apply_env(&mut a, &env).is_ok());
        assert_eq!(a.no_push, Some(true));
        assert_eq!(a.registry_maps, vec!["gcr.io=a", "quay.io=q;docker.io=d"]);
        assert_eq!(a.registry_mirrors, vec!["mirror.example"]);
        let mut a = parse(&[]);
        let bad = |k: &str| (k == "KANIKO_NO_PUSH").then(|| "yes".to_string());
        assert_eq!(
            err(apply_env(&mut a, &bad)),
            "KANIKO_NO_PUSH=yes: expected true or false"
        );
        for var in ["STACKLOG_PATH", "BENCHMARK_FILE"] {
            let mut a = parse(&[]);
            let set = |k: &str| (k == var).then(|| "/tmp/x".to_string());
            assert!(err(apply_env(&mut a, &set)).starts_with(var));
        }
        let mut a = parse(&[]);
        let off = |k: &str| (k == "BENCHMARK_FILE").then(|| "false".to_string());
        assert!(apply_env(&mut a, &off).is_ok());
    }

    #[test]
    fn unsupported_flags_are_refused_by_name() {
        assert!(refuse_unsupported(&parse(&[])).is_ok());
        assert!(refuse_unsupported(&parse(&["--skip-default-registry-fallback"])).is_ok());
        assert!(refuse_unsupported(&parse(&["--push-ignore-immutable-tag-errors=false"])).is_ok());
        for (argv, start) in [
            (
                &["-b", "bkt"][..],
                "--bucket bkt: kiln reads bucket contexts directly; use --context=gs://bkt/",
            ),
            (
                &["--push-ignore-immutable-tag-errors"][..],
                "--push-ignore-immutable-tag-errors: not supported yet",
            ),
            (
                &[
                    "--skip-default-registry-fallback=true",
                    "--registry-mirror=m",
                ][..],
                "--skip-default-registry-fallback: not supported yet",
            ),
            (
                &["--cache-repo=oci:/c"][..],
                "--cache-repo oci:/c: a cache repository in an OCI layout is not supported yet",
            ),
        ] {
            let e = err(refuse_unsupported(&parse(argv)));
            assert!(e.starts_with(start), "{argv:?}: {e}");
        }
    }

    #[test]
    fn git_env_vars_are_refused_for_git_contexts_only() {
        let tok = |k: &str| (k == "GIT_TOKEN").then(|| "s3cr3t".to_string());
        assert!(refuse_git_env("/workspace", &tok).is_ok());
        assert!(refuse_git_env("s3://b/ctx.tar.gz", &tok).is_ok());
        let e = err(refuse_git_env("git://host/repo.git#refs/heads/main", &tok));
        assert!(e.starts_with("GIT_TOKEN: not supported yet"), "{e}");
        assert!(!e.contains("s3cr3t"));
        let none = |_: &str| None;
        assert!(refuse_git_env("https://host/r.git", &none).is_ok());
    }

    #[test]
    fn verbosity_maps_to_a_tracing_level() {
        assert_eq!(verbosity_filter("panic"), Some("error"));
        assert_eq!(verbosity_filter("fatal"), Some("error"));
        assert_eq!(verbosity_filter("info"), Some("info"));
        assert_eq!(verbosity_filter("trace"), Some("trace"));
        assert_eq!(verbosity_filter("loud"), None);
    }

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
