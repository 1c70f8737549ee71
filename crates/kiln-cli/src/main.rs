//! The `kiln` binary: parses the command line and wires the pipeline crates
//! together. Everything that is not flag handling lives in the library
//! crates.

mod build;
mod cache_cmd;
mod cleanup;
mod flags;
mod job;
mod kaniko;

use clap::{Parser, Subcommand};

/// kiln builds OCI container images from Dockerfiles, without a daemon and
/// without privileges.
#[derive(Parser)]
#[command(name = "kiln", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Log verbosity for diagnostics (error, warn, info, debug, trace);
    /// default warn, or `kiln executor`'s -v/--verbosity.
    #[arg(long, global = true, env = "KILN_LOG")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Build an image from a Dockerfile and a context.
    Build(Box<build::BuildArgs>),
    /// Build with Kaniko's executor flags (also runs as `/kaniko/executor`).
    Executor(Box<kaniko::KanikoArgs>),
    /// Manage the local cache directory.
    Cache(cache_cmd::CacheArgs),
    /// Deletes a trash directory's contents (run detached after builds).
    #[command(name = "internal-cleanup", hide = true)]
    InternalCleanup { trash: std::path::PathBuf },
}

fn main() {
    // RUN steps execute in a fresh copy of this binary; it takes over here
    // before any thread exists.
    kiln_sandbox::maybe_run_init();
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // Installed as `executor` (e.g. /kaniko/executor): Kaniko's command line.
    let invoked_as = argv
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|n| n.to_string_lossy().to_string());
    if invoked_as.as_deref() == Some("executor") {
        argv.insert(1, "executor".into());
    }
    let cli = Cli::parse_from(argv);
    let level = match (&cli.log_level, &cli.command) {
        (Some(l), _) => l.clone(),
        (None, Commands::Executor(k)) => kaniko::verbosity_filter(&k.verbosity)
            .unwrap_or("warn")
            .to_string(),
        (None, _) => "warn".to_string(),
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Commands::Build(args) => build::run(*args),
        Commands::Executor(args) => kaniko::run(*args),
        Commands::Cache(args) => cache_cmd::run(args),
        Commands::InternalCleanup { trash } => {
            cleanup::empty_trash(&trash);
            Ok(())
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
