//! kiln-export: the last stage of the pipeline. It takes the images a build
//! produced (one per target platform) and puts them where the command line
//! asked:
//!
//! - names first: every tag, push destination and `type=image,name=` is checked
//!   to be an image reference when the [`Exporter`] is made, before anything is
//!   built or written ([`names`]);
//! - one platform: each `--output` through kiln-build's writers, then pushes;
//! - several platforms: one image index ([`index`]), written into OCI layouts
//!   and archives, one directory per platform for `type=local`, refused by
//!   outputs that hold one image ([`outputs`]), and pushed with every
//!   platform's image ([`push`]);
//! - then the result files: digest, Kaniko's name-with-digest files, BuildKit's
//!   metadata JSON ([`files`]).
//!
//! The CLI builds an [`ExportPlan`] from its flags, makes an [`Exporter`] of it
//! and hands it the build's [`PlatformResult`]s; it gets an [`ExportReport`]
//! back (the digest it prints).

mod error;
pub mod files;
pub mod index;
pub mod names;
pub mod outputs;
mod push;

use std::path::Path;

use kiln_build::progress::Progress;
use kiln_image::{BlobStore, Descriptor, Digest, Format, Image, StoredImage};
use kiln_registry::{Reference, RegistryClient};

pub use error::ExportError;
pub use files::ResultFiles;
/// Output specs are parsed where kiln-build defines them; the CLI reaches them
/// through the exporter.
pub use kiln_build::output::{parse_output, Output};
pub use names::repository_of;
pub use outputs::describe;

/// Where a build's images go, as the command line described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportPlan {
    /// Image names: ref names in layouts, tags in docker archives, the metadata
    /// file's `image.name`.
    pub tags: Vec<String>,
    /// Registry destinations, pushed in order.
    pub push_to: Vec<String>,
    /// File, directory and registry outputs, written in order.
    pub outputs: Vec<Output>,
    /// The media type family of the build (and so of a multi-platform index).
    pub format: Format,
    /// Result files.
    pub files: ResultFiles,
}

/// One platform's image, as the build left it in the store.
#[derive(Debug, Clone)]
pub struct PlatformResult {
    pub image: Image,
    pub stored: StoredImage,
}

impl From<kiln_build::BuildOutput> for PlatformResult {
    fn from(out: kiln_build::BuildOutput) -> Self {
        PlatformResult {
            image: out.image,
            stored: out.stored,
        }
    }
}

/// What the exporter works with: the blob store, the registry client and the
/// runtime it runs on, the progress sink, and scratch space.
pub struct ExportEnv<'a> {
    pub store: &'a BlobStore,
    pub registry: &'a RegistryClient,
    pub runtime: &'a tokio::runtime::Handle,
    pub progress: &'a dyn Progress,
    /// A scratch directory of this build (archives are assembled there).
    pub work: &'a Path,
}

/// What was exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportReport {
    /// The image manifest, or the index of a multi-platform build.
    pub descriptor: Descriptor,
    /// The config digest (single-platform builds).
    pub config: Option<Digest>,
    /// Each destination pushed, with the digest the registry confirmed.
    pub pushed: Vec<(String, Digest)>,
}

impl ExportReport {
    /// The image digest: the manifest's, or the index's.
    pub fn digest(&self) -> &Digest {
        &self.descriptor.digest
    }
}

/// An export plan whose names are all valid image references.
#[derive(Debug)]
pub struct Exporter {
    plan: ExportPlan,
    /// `plan.push_to`, parsed.
    push_refs: Vec<Reference>,
}

impl Exporter {
    /// Checks every name of the plan (tags, push destinations, `type=image`
    /// names, in that order) before anything is built or written.
    pub fn new(plan: ExportPlan) -> Result<Self, ExportError> {
        for tag in &plan.tags {
            names::parse_name(tag)?;
        }
        let push_refs = plan
            .push_to
            .iter()
            .map(|n| names::parse_name(n))
            .collect::<Result<Vec<_>, _>>()?;
        for output in &plan.outputs {
            if let Output::Image { names, .. } = output {
                for n in names {
                    names::parse_name(n)?;
                }
            }
        }
        Ok(Exporter { plan, push_refs })
    }

    /// The plan being carried out.
    pub fn plan(&self) -> &ExportPlan {
        &self.plan
    }

    /// Writes the built images (one per target platform, in platform order) to
    /// every output, pushes them, then writes the result files. Each output is
    /// announced on stderr (`exported OCI layout out`) once written.
    pub fn export(
        &self,
        env: &ExportEnv<'_>,
        built: Vec<PlatformResult>,
    ) -> Result<ExportReport, ExportError> {
        let plan = &self.plan;
        let report = match built.as_slice() {
            [] => return Err(ExportError::NothingBuilt),
            [one] => {
                for output in &plan.outputs {
                    outputs::export_one(env.store, output, one, &plan.tags)?;
                    eprintln!("exported {}", describe(output));
                }
                let pushed = push::push_image(env, &one.stored, &plan.push_to)?;
                ExportReport {
                    descriptor: one.stored.manifest.clone(),
                    config: Some(one.stored.config_digest.clone()),
                    pushed,
                }
            }
            many => {
                let images: Vec<StoredImage> = many.iter().map(|b| b.stored.clone()).collect();
                let index = index::store_index(env.store, &images, plan.format)?;
                for output in &plan.outputs {
                    outputs::export_index(env.store, output, &index, many, &plan.tags, env.work)?;
                    eprintln!("exported {}", describe(output));
                }
                let mut pushed = Vec::new();
                for dest in &self.push_refs {
                    pushed.push(push::push_index(env, &index, &images, dest)?);
                }
                ExportReport {
                    descriptor: index,
                    config: None,
                    pushed,
                }
            }
        };
        files::write_all(&plan.files, &report, &plan.tags, &plan.push_to)?;
        Ok(report)
    }
}
