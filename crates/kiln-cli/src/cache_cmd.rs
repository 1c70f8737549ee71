//! `kiln cache prune`: flags for pruning the local cache directory.

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};

use crate::flags;

#[derive(Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub command: CacheCommand,
}

#[derive(Subcommand)]
pub enum CacheCommand {
    /// Remove cached steps and blobs: by age, by size, or everything.
    Prune(PruneArgs),
}

#[derive(Args)]
pub struct PruneArgs {
    /// The cache directory (as for `kiln build`).
    #[arg(long, env = "KILN_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Keep what was used within this long (Go duration: 24h, 30m).
    #[arg(long)]
    pub keep_duration: Option<String>,
    /// Keep at most this much cached layer data (bytes; k, M, G suffixes).
    #[arg(long)]
    pub keep_storage: Option<String>,
    /// Remove everything, cache mounts included.
    #[arg(long)]
    pub all: bool,
    /// How long to wait for running builds to finish (Go duration).
    #[arg(long, default_value = "30m")]
    pub wait_timeout: String,
}

/// `10G`, `500M`, `1024` → bytes.
fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let mult = match t[i..].to_ascii_lowercase().trim_end_matches(['b', 'i']) {
                "" => 1,
                "k" => 1 << 10,
                "m" => 1 << 20,
                "g" => 1 << 30,
                "t" => 1u64 << 40,
                _ => bail!("--keep-storage {s}: expected a size such as 500M or 10G"),
            };
            (&t[..i], mult)
        }
        None => (t, 1),
    };
    let n: f64 = num
        .trim()
        .parse()
        .with_context(|| format!("--keep-storage {s}: expected a size such as 500M or 10G"))?;
    Ok((n * mult as f64) as u64)
}

pub fn run(args: CacheArgs) -> Result<()> {
    match args.command {
        CacheCommand::Prune(p) => prune(p),
    }
}

fn prune(args: PruneArgs) -> Result<()> {
    let dir = args.cache_dir.unwrap_or_else(flags::default_cache_dir);
    let opts = kiln_build::cache::PruneOptions {
        keep_duration: match &args.keep_duration {
            Some(d) => Some(flags::parse_ttl("--keep-duration", d)?),
            None => None,
        },
        keep_bytes: match &args.keep_storage {
            Some(s) => Some(parse_size(s)?),
            None => None,
        },
        all: args.all,
    };
    let timeout = flags::parse_ttl("--wait-timeout", &args.wait_timeout)?;
    let mut waiting = |waited: std::time::Duration| {
        if waited.is_zero() {
            eprintln!(
                "waiting for the builds using {} to finish (at most {})",
                dir.display(),
                args.wait_timeout
            );
        } else {
            eprintln!(
                "still waiting for the builds using {} after {}s",
                dir.display(),
                waited.as_secs()
            );
        }
    };
    let Some(_lock) = kiln_build::cache::CacheLock::exclusive_waiting(
        &dir,
        timeout,
        std::time::Duration::from_secs(30),
        &mut waiting,
    )
    .with_context(|| format!("locking the cache directory {}", dir.display()))?
    else {
        bail!(
            "timed out after {} waiting for the builds using the cache directory {} to finish; nothing was pruned",
            args.wait_timeout,
            dir.display()
        );
    };
    let r = kiln_build::cache::prune_cache(&dir, &opts)
        .with_context(|| format!("pruning {}", dir.display()))?;
    println!(
        "removed {} cached step(s) and {} blob(s) ({}) from {}",
        r.records,
        r.blobs,
        kiln_build::progress::human_bytes(r.bytes),
        dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_size("500m").unwrap(), 500 << 20);
        assert!(parse_size("lots").is_err());
    }
}
