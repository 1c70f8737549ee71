//! Caches that travel: step records exported to, and imported from, a
//! registry, an OCI layout directory, or the built image itself.
//!
//! Two layouts are supported:
//! - **Kaniko's** (`--cache-repo`): every cached step is a small image in a
//!   repository, tagged by the step's key, holding the step's layer (if
//!   any) and its history entry. Steps are looked up one by one before they
//!   run and pushed as the build goes ([`RepoCache`]).
//! - **BuildKit's** (`--cache-to` / `--cache-from`): one image holds every
//!   exported record, its layers the records' layers, and the record table
//!   in the image config under [`RECORDS_FIELD`]. It is a plain OCI image
//!   manifest with an ordinary image config, so any registry that stores
//!   images (ECR, Artifact Registry, ACR included) stores it. `type=inline`
//!   puts the table into the built image's own config instead. Imported
//!   tables answer lookups through [`ImportedCache`].

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use kiln_image::{BlobStore, History, Image, ImageConfig, Layer, Platform};
use kiln_registry::{Reference, RegistryClient};

use crate::cache::{CacheBackend, CacheError, StepRecord};
use crate::executor::CacheEntry;
use crate::progress::Progress;
use crate::registry::TransferReport;
use crate::BuildError;

/// The image config field holding the record table.
pub const RECORDS_FIELD: &str = "kiln.cache.v1";
/// The image config field listing exported `RUN --mount=type=cache`
/// directories: `[{"id": …, "layer": index}]`.
pub const MOUNTS_FIELD: &str = "kiln.cache.mounts.v1";

/// Where a cache goes or comes from (`--cache-to` / `--cache-from`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheSpec {
    /// `type=registry,ref=R[,mode=min|max][,mounts=true]` (a bare `R` on
    /// `--cache-from`). `mounts=true` (kiln's own) also exports the
    /// `RUN --mount=type=cache` directories, so package caches reach fresh
    /// machines.
    Registry {
        reference: String,
        max: bool,
        mounts: bool,
    },
    /// `type=local,dest=DIR` / `type=local,src=DIR`: an OCI layout.
    Local {
        dir: PathBuf,
        max: bool,
        mounts: bool,
    },
    /// `type=inline`: the table rides in the built image's config.
    Inline,
}

impl CacheSpec {
    /// Whether exporting this cache carries the layers of stages outside
    /// the image (`mode=max`; `min` and inline keep the image's own).
    pub fn exports_all_stages(&self) -> bool {
        match self {
            CacheSpec::Registry { max, .. } | CacheSpec::Local { max, .. } => *max,
            CacheSpec::Inline => false,
        }
    }

    /// Parses a `--cache-to` (`export = true`) or `--cache-from` value.
    pub fn parse(spec: &str, export: bool) -> Result<CacheSpec, CacheError> {
        let flag = if export { "--cache-to" } else { "--cache-from" };
        let bad = |problem: String| CacheError::BadSpec {
            flag,
            spec: spec.to_string(),
            problem,
        };
        if !spec.contains('=') {
            return Ok(CacheSpec::Registry {
                reference: spec.to_string(),
                max: false,
                mounts: false,
            });
        }
        let mut fields = BTreeMap::new();
        for part in spec.split(',') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("`{part}` is not key=value")))?;
            fields.insert(k.trim().to_string(), v.trim().to_string());
        }
        let max = match fields.get("mode").map(String::as_str) {
            None | Some("min") => false,
            Some("max") => true,
            Some(other) => return Err(bad(format!("mode={other}: expected min or max"))),
        };
        let mounts = match fields.get("mounts").map(String::as_str) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => return Err(bad(format!("mounts={other}: expected true or false"))),
        };
        match fields.get("type").map(String::as_str) {
            Some("registry") => {
                let reference = fields
                    .get("ref")
                    .cloned()
                    .ok_or_else(|| bad("type=registry needs ref=".into()))?;
                Ok(CacheSpec::Registry {
                    reference,
                    max,
                    mounts,
                })
            }
            Some("local") => {
                let key = if export { "dest" } else { "src" };
                let dir = fields
                    .get(key)
                    .ok_or_else(|| bad(format!("type=local needs {key}=")))?;
                Ok(CacheSpec::Local {
                    dir: PathBuf::from(dir),
                    max,
                    mounts,
                })
            }
            Some("inline") => Ok(CacheSpec::Inline),
            Some(other) => Err(bad(format!(
                "type={other}: expected registry, local or inline"
            ))),
            None => Err(bad("type= is missing".into())),
        }
    }
}

/// One record in a table: its layer is an index into the image's layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TableRecord {
    key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    layer: Option<usize>,
    history: History,
}

/// The records a cache export holds: every entry (`max`) or only those of
/// the target stage's chain, deduplicated by key, in build order.
pub fn select(entries: &[CacheEntry], max: bool) -> Vec<CacheEntry> {
    let mut seen = std::collections::HashSet::new();
    entries
        .iter()
        .filter(|e| max || e.in_target)
        .filter(|e| seen.insert(e.key.clone()))
        .cloned()
        .collect()
}

/// Builds the cache image for `entries`: their layers (each once) and the
/// record table in an image config for `platform`.
pub fn cache_image(entries: &[CacheEntry], platform: &Platform) -> Image {
    let mut layers: Vec<Layer> = Vec::new();
    let mut table = Vec::new();
    for e in entries {
        let layer = e.record.layer.as_ref().map(|l| {
            match layers.iter().position(|x| x.digest == l.digest) {
                Some(i) => i,
                None => {
                    layers.push(l.clone());
                    layers.len() - 1
                }
            }
        });
        table.push(TableRecord {
            key: e.key.clone(),
            layer,
            history: e.record.history.clone(),
        });
    }
    let mut config = ImageConfig {
        architecture: platform.architecture.clone(),
        os: platform.os.clone(),
        variant: platform.variant.clone(),
        ..ImageConfig::default()
    };
    config.extra.insert(
        RECORDS_FIELD.to_string(),
        serde_json::to_value(&table).unwrap_or_default(),
    );
    Image { config, layers }
}

/// Adds the record table of `entries` (which must only use `image`'s own
/// layers) to the built image's config: `type=inline`.
pub fn inline_into(image: &mut Image, entries: &[CacheEntry]) {
    let mut table = Vec::new();
    for e in entries {
        let layer = match &e.record.layer {
            Some(l) => match image.layers.iter().position(|x| x.digest == l.digest) {
                Some(i) => Some(i),
                None => continue,
            },
            None => None,
        };
        table.push(TableRecord {
            key: e.key.clone(),
            layer,
            history: e.record.history.clone(),
        });
    }
    image.config.extra.insert(
        RECORDS_FIELD.to_string(),
        serde_json::to_value(&table).unwrap_or_default(),
    );
}

/// The records in an image's table (empty when it has none).
pub fn records_of(image: &Image) -> HashMap<String, StepRecord> {
    let Some(value) = image.config.extra.get(RECORDS_FIELD) else {
        return HashMap::new();
    };
    let Ok(table) = serde_json::from_value::<Vec<TableRecord>>(value.clone()) else {
        return HashMap::new();
    };
    let mut out = HashMap::new();
    for r in table {
        let layer = match r.layer {
            Some(i) => match image.layers.get(i) {
                Some(l) => Some(l.clone()),
                None => continue,
            },
            None => None,
        };
        out.insert(
            r.key,
            StepRecord {
                layer,
                history: r.history,
            },
        );
    }
    out
}

/// Records imported from a cache image (`--cache-from`), answering lookups.
pub struct ImportedCache {
    pub name: String,
    pub records: HashMap<String, StepRecord>,
    /// Exported cache mount directories: (id, layer).
    pub mounts: Vec<(String, Layer)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct MountRecord {
    id: String,
    layer: usize,
}

/// The cache mount directories an image carries (empty when none).
pub fn mounts_of(image: &Image) -> Vec<(String, Layer)> {
    let Some(value) = image.config.extra.get(MOUNTS_FIELD) else {
        return Vec::new();
    };
    let Ok(list) = serde_json::from_value::<Vec<MountRecord>>(value.clone()) else {
        return Vec::new();
    };
    list.into_iter()
        .filter_map(|m| Some((m.id, image.layers.get(m.layer)?.clone())))
        .collect()
}

impl ImportedCache {
    /// Unpacks imported cache mount directories that do not exist here yet
    /// (a directory already present is never overwritten: it is at least
    /// as fresh). Returns how many were restored.
    pub fn restore_mounts(
        &self,
        store: &BlobStore,
        mount_cache_dir: &std::path::Path,
    ) -> Result<usize, BuildError> {
        let mut n = 0;
        for (id, layer) in &self.mounts {
            let dir = crate::run::mount_cache_path(mount_cache_dir, id);
            if dir.exists() {
                continue;
            }
            // Unpack beside it, then rename: a crash leaves no half cache.
            let tmp = dir.with_extension("importing");
            let _ = std::fs::remove_dir_all(&tmp);
            kiln_image::apply_layer(store, &layer.digest, &tmp, &Default::default())?;
            std::fs::rename(&tmp, &dir).map_err(|source| BuildError::Io {
                path: dir.clone(),
                source,
            })?;
            n += 1;
        }
        Ok(n)
    }
}

impl CacheBackend for ImportedCache {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn get(&self, key: &str, store: &BlobStore) -> Option<StepRecord> {
        let r = self.records.get(key)?;
        match &r.layer {
            Some(l) if !store.contains(&l.digest) => None,
            _ => Some(r.clone()),
        }
    }

    fn put(&self, _key: &str, _record: &StepRecord, _store: &BlobStore) -> Result<(), CacheError> {
        // Exports happen once, after the build.
        Ok(())
    }
}

/// Kaniko's cache layout: each step an image `REPO:<key>`.
pub struct RepoCache<'a> {
    pub client: &'a RegistryClient,
    pub runtime: tokio::runtime::Handle,
    pub progress: &'a dyn Progress,
    /// The repository, without tag.
    pub repo: String,
    pub platform: Platform,
    /// Records older than this are misses.
    pub ttl: Option<std::time::Duration>,
    /// Push new steps (Kaniko's `--no-push-cache` turns it off).
    pub push: bool,
    /// Which kinds of step are cached: Kaniko's `--cache-copy-layers` and
    /// `--cache-run-layers`.
    pub copy_layers: bool,
    pub run_layers: bool,
}

impl RepoCache<'_> {
    fn reference(&self, key: &str) -> Result<Reference, CacheError> {
        format!("{}:{key}", self.repo)
            .parse()
            .map_err(|source| CacheError::Reference {
                reference: format!("--cache-repo {}", self.repo),
                source: Box::new(source),
            })
    }

    fn wanted(&self, record: &StepRecord) -> bool {
        let by = record.history.created_by.as_deref().unwrap_or("");
        if by.starts_with("RUN ") {
            self.run_layers
        } else if by.starts_with("COPY ") || by.starts_with("ADD ") {
            self.copy_layers
        } else {
            true
        }
    }
}

impl CacheBackend for RepoCache<'_> {
    fn describe(&self) -> String {
        format!("registry {}", self.repo)
    }

    fn get(&self, key: &str, store: &BlobStore) -> Option<StepRecord> {
        let reference = self.reference(key).ok()?;
        let report = TransferReport::new(self.progress, "pulled");
        let stored = match self.runtime.block_on(self.client.pull(
            store,
            &reference,
            &self.platform,
            &report,
        )) {
            Ok(s) => s,
            // Not there: an ordinary miss. Anything else (a damaged blob,
            // an unreachable registry) is worth a warning; the step runs.
            Err(kiln_registry::Error::Status { status: 404, .. }) => return None,
            Err(e) => {
                self.progress
                    .info(&format!("warning: cached step {reference} not used: {e}"));
                return None;
            }
        };
        let image = kiln_image::load_image(store, &stored.manifest.digest).ok()?;
        let history = image.config.history.first()?.clone();
        if let (Some(ttl), Some(created)) = (self.ttl, history.created.as_deref()) {
            if age_of(created).is_some_and(|age| age > ttl) {
                return None;
            }
        }
        let record = StepRecord {
            layer: image.layers.first().cloned(),
            history,
        };
        self.wanted(&record).then_some(record)
    }

    fn put(&self, key: &str, record: &StepRecord, store: &BlobStore) -> Result<(), CacheError> {
        if !self.push || !self.wanted(record) {
            return Ok(());
        }
        let reference = self.reference(key)?;
        let mut config = ImageConfig {
            architecture: self.platform.architecture.clone(),
            os: self.platform.os.clone(),
            variant: self.platform.variant.clone(),
            created: record.history.created.clone(),
            ..ImageConfig::default()
        };
        config.history.push(record.history.clone());
        let image = Image {
            config,
            layers: record.layer.iter().cloned().collect(),
        };
        let stored = kiln_image::store_image(store, &image, kiln_image::Format::Oci)?;
        let report = TransferReport::new(self.progress, "pushed");
        self.runtime
            .block_on(self.client.push(store, &stored, &reference, &report))
            .map_err(|source| CacheError::Transfer {
                action: "pushing ",
                reference: reference.to_string(),
                source: Box::new(source),
            })?;
        self.progress
            .info(&format!("cached step pushed to {reference}"));
        Ok(())
    }
}

/// Seconds since an RFC 3339 UTC time (`2024-01-02T03:04:05Z`, fractions
/// allowed), or `None` when it does not parse.
fn age_of(rfc3339: &str) -> Option<std::time::Duration> {
    let secs = parse_rfc3339(rfc3339)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs() as i64;
    Some(std::time::Duration::from_secs(
        u64::try_from(now - secs).unwrap_or(0),
    ))
}

/// Days-from-civil (proleptic Gregorian): kiln only needs UTC `Z` times,
/// which every builder writes, so no date crate is pulled in for this.
fn parse_rfc3339(s: &str) -> Option<i64> {
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-');
    let y: i64 = d.next()?.parse().ok()?;
    let m: i64 = d.next()?.parse().ok()?;
    let day: i64 = d.next()?.parse().ok()?;
    let time = time.strip_suffix('Z')?;
    let time = time.split('.').next()?;
    let mut t = time.split(':');
    let hh: i64 = t.next()?.parse().ok()?;
    let mm: i64 = t.next()?.parse().ok()?;
    let ss: i64 = t.next()?.parse().ok()?;
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Loads the records of a cache image already in the store.
pub fn import_stored(
    store: &BlobStore,
    stored: &kiln_image::StoredImage,
    name: String,
) -> Result<ImportedCache, BuildError> {
    let image = kiln_image::load_image(store, &stored.manifest.digest)?;
    Ok(ImportedCache {
        name,
        records: records_of(&image),
        mounts: mounts_of(&image),
    })
}

/// The registry side of imports and exports.
pub struct CacheTransport<'a> {
    pub client: &'a RegistryClient,
    pub runtime: tokio::runtime::Handle,
    pub progress: &'a dyn Progress,
    pub platform: Platform,
}

impl CacheTransport<'_> {
    /// Imports a `--cache-from` source. A cache that cannot be read is a
    /// warning, never a failed build (the steps just run).
    pub fn import(&self, store: &BlobStore, spec: &CacheSpec) -> Option<ImportedCache> {
        let result = match spec {
            CacheSpec::Registry { reference, .. } => self.import_registry(store, reference),
            CacheSpec::Local { dir, .. } => {
                kiln_image::import_oci_layout(store, dir, None, &self.platform)
                    .map_err(CacheError::from)
                    .and_then(|stored| {
                        import_stored(store, &stored, format!("local {}", dir.display()))
                            .map_err(|e| CacheError::Build(Box::new(e)))
                    })
            }
            CacheSpec::Inline => Err(CacheError::InlineImport),
        };
        match result {
            Ok(cache) => {
                self.progress.info(&format!(
                    "cache import from {}: {} step(s)",
                    cache.name,
                    cache.records.len()
                ));
                Some(cache)
            }
            Err(e) => {
                self.progress
                    .info(&format!("warning: cache import skipped: {e}"));
                None
            }
        }
    }

    fn import_registry(
        &self,
        store: &BlobStore,
        reference: &str,
    ) -> Result<ImportedCache, CacheError> {
        let parsed: Reference = reference.parse().map_err(|source| CacheError::Reference {
            reference: reference.to_string(),
            source: Box::new(source),
        })?;
        let report = TransferReport::new(self.progress, "pulled");
        let stored = self
            .runtime
            .block_on(self.client.pull(store, &parsed, &self.platform, &report))
            .map_err(|source| CacheError::Transfer {
                action: "",
                reference: parsed.to_string(),
                source: Box::new(source),
            })?;
        self.progress
            .info(&format!("cache {parsed}: {}", report.summary()));
        import_stored(store, &stored, format!("registry {parsed}"))
            .map_err(|e| CacheError::Build(Box::new(e)))
    }

    /// Exports a `--cache-to` destination (registry or local; inline is
    /// applied to the image before it is stored).
    pub fn export(
        &self,
        store: &BlobStore,
        spec: &CacheSpec,
        entries: &[CacheEntry],
        cache_mounts: &[(String, PathBuf)],
    ) -> Result<(), BuildError> {
        let (max, mounts, what) = match spec {
            CacheSpec::Registry {
                max,
                mounts,
                reference,
            } => (*max, *mounts, reference.clone()),
            CacheSpec::Local { max, mounts, dir } => (*max, *mounts, dir.display().to_string()),
            CacheSpec::Inline => return Ok(()),
        };
        let selected = select(entries, max);
        let mut image = cache_image(&selected, &self.platform);
        if mounts {
            let mut list = Vec::new();
            for (id, dir) in cache_mounts {
                let layer = kiln_image::write_layer(
                    store,
                    crate::snapshot::tree_entries(dir)?,
                    &kiln_image::LayerOptions {
                        compression: kiln_image::Compression::Gzip { level: 6 },
                        format: kiln_image::Format::Oci,
                        mtime_clamp: None,
                    },
                )?;
                self.progress.info(&format!(
                    "cache mount {id}: {} exported",
                    crate::progress::human_bytes(layer.size)
                ));
                list.push(MountRecord {
                    id: id.clone(),
                    layer: image.layers.len(),
                });
                image.layers.push(layer);
            }
            image.config.extra.insert(
                MOUNTS_FIELD.to_string(),
                serde_json::to_value(&list).unwrap_or_default(),
            );
        }
        let stored = kiln_image::store_image(store, &image, kiln_image::Format::Oci)?;
        match spec {
            CacheSpec::Registry { reference, .. } => {
                crate::registry::push_all(
                    self.client,
                    &self.runtime,
                    store,
                    &stored,
                    std::slice::from_ref(reference),
                    self.progress,
                )?;
            }
            CacheSpec::Local { dir, .. } => {
                kiln_image::write_oci_layout(store, dir, &[(stored, Some("latest".into()))])?;
            }
            CacheSpec::Inline => {}
        }
        self.progress.info(&format!(
            "cache exported to {what}: {} step(s), {} layer(s)",
            selected.len(),
            image.layers.len()
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(n: u8) -> Layer {
        let d = kiln_image::Digest::sha256(&[n]);
        Layer {
            digest: d.clone(),
            diff_id: d,
            size: n as u64,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        }
    }

    fn entry(key: &str, l: Option<u8>, in_target: bool) -> CacheEntry {
        CacheEntry {
            key: key.into(),
            record: StepRecord {
                layer: l.map(layer),
                history: History {
                    created_by: Some(format!("RUN {key}")),
                    ..History::default()
                },
            },
            in_target,
        }
    }

    #[test]
    fn specs() {
        assert_eq!(
            CacheSpec::parse("type=registry,ref=r.io/a/cache,mode=max", true).ok(),
            Some(CacheSpec::Registry {
                reference: "r.io/a/cache".into(),
                max: true,
                mounts: false
            })
        );
        assert_eq!(
            CacheSpec::parse("r.io/a/cache", false).ok(),
            Some(CacheSpec::Registry {
                reference: "r.io/a/cache".into(),
                max: false,
                mounts: false
            })
        );
        assert_eq!(
            CacheSpec::parse("type=local,dest=/c", true).ok(),
            Some(CacheSpec::Local {
                dir: "/c".into(),
                max: false,
                mounts: false
            })
        );
        assert_eq!(
            CacheSpec::parse("type=inline", true).ok(),
            Some(CacheSpec::Inline)
        );
        let e = CacheSpec::parse("type=local,dest=/c", false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs src="), "{e}");
        let e = CacheSpec::parse("type=s3,bucket=b", true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("type=s3"), "{e}");
        let e = CacheSpec::parse("type=registry,ref=x,mode=all", true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("mode=all"), "{e}");
    }

    #[test]
    fn table_round_trips_and_shares_layers() {
        let entries = vec![
            entry("a", Some(1), true),
            entry("b", None, true),
            entry("c", Some(2), false),
            entry("a", Some(1), true),
            entry("d", Some(1), true),
        ];
        let min = select(&entries, false);
        assert_eq!(
            min.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
            ["a", "b", "d"]
        );
        let max = select(&entries, true);
        assert_eq!(max.len(), 4);
        let image = cache_image(&max, &Platform::default());
        assert_eq!(image.layers.len(), 2, "layer 1 is stored once");
        let back = records_of(&image);
        assert_eq!(back.len(), 4);
        assert_eq!(back["a"].layer, Some(layer(1)));
        assert_eq!(back["d"].layer, Some(layer(1)));
        assert_eq!(back["c"].layer, Some(layer(2)));
        assert_eq!(back["b"].layer, None);
        assert_eq!(back["b"].history.created_by.as_deref(), Some("RUN b"));
    }

    #[test]
    fn inline_keeps_only_the_image_layers() {
        let mut image = Image {
            config: ImageConfig::default(),
            layers: vec![layer(1)],
        };
        inline_into(
            &mut image,
            &[entry("a", Some(1), true), entry("x", Some(9), true)],
        );
        let back = records_of(&image);
        assert_eq!(back.len(), 1);
        assert!(back.contains_key("a"));
    }

    #[test]
    fn rfc3339_ages() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2000-03-01T12:30:15.25Z"), Some(951_913_815));
        assert_eq!(parse_rfc3339("2024-02-29T00:00:00Z"), Some(1_709_164_800));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
