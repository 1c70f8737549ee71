//! Flag values both front-ends share: platforms, `K=V` lists, secrets,
//! compression, isolation, durations, the cache directory, and registry
//! settings (TLS, mirrors, cloud auth). Each parser names the flag in its
//! error.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use kiln_image::{Compression, Platform};

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
    s.parse::<Platform>()
        .map_err(|e| anyhow::anyhow!("{flag} {e}"))
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
}
