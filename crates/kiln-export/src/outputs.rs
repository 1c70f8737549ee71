//! File and directory outputs (`--output`): what each one is called in messages,
//! and how a build's images are written to it. One image goes through
//! kiln-build's writers; a multi-platform image goes to an OCI layout or archive
//! as one index, to `type=local` as one directory per platform (`linux_amd64/`,
//! as BuildKit does), and is refused by outputs that hold one image (docker
//! archives, filesystem tars).

use std::path::{Path, PathBuf};

use kiln_build::output::{export, ref_name_of, Output};
use kiln_image::{BlobStore, Descriptor, Digest, Platform, StoredImage};

use crate::files::tmp_path;
use crate::index::{layout_entries, write_index_layout};
use crate::{ExportError, PlatformResult};

/// How an output is named in messages (`exported OCI layout out`).
pub fn describe(o: &Output) -> String {
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

/// Where a multi-platform `type=local` output puts one platform's filesystem:
/// `DEST/os_arch[_variant]`.
pub fn platform_dir(dest: &Path, p: &Platform) -> PathBuf {
    dest.join(p.to_string().replace('/', "_"))
}

/// What a multi-platform image becomes in one output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexTarget<'a> {
    /// An OCI layout directory holding the index.
    Layout(&'a Path),
    /// An OCI archive holding the index.
    Archive(&'a Path),
    /// One filesystem directory per platform below this one.
    PlatformDirs(&'a Path),
    /// A registry output: pushes handle it.
    Registry,
}

/// How a multi-platform image is written to `output`; outputs that hold one
/// image only are refused.
pub fn index_target(output: &Output) -> Result<IndexTarget<'_>, ExportError> {
    match output {
        Output::Oci {
            dest,
            archive: false,
        } => Ok(IndexTarget::Layout(dest)),
        Output::Oci {
            dest,
            archive: true,
        } => Ok(IndexTarget::Archive(dest)),
        Output::Local { dest } => Ok(IndexTarget::PlatformDirs(dest)),
        Output::Docker { .. } | Output::Tar { .. } => Err(ExportError::OneImageOnly {
            output: describe(output),
        }),
        Output::Image { .. } => Ok(IndexTarget::Registry),
    }
}

/// Writes one image to a file or directory output.
pub(crate) fn export_one(
    store: &BlobStore,
    output: &Output,
    built: &PlatformResult,
    tags: &[String],
) -> Result<(), ExportError> {
    Ok(export(store, output, &built.image, &built.stored, tags)?)
}

/// Writes a multi-platform image (its index `index` over `built`) to a file or
/// directory output; `work` is scratch space for assembling archives.
pub(crate) fn export_index(
    store: &BlobStore,
    output: &Output,
    index: &Descriptor,
    built: &[PlatformResult],
    tags: &[String],
    work: &Path,
) -> Result<(), ExportError> {
    let target = index_target(output)?;
    let images: Vec<(StoredImage, Option<String>)> =
        built.iter().map(|b| (b.stored.clone(), None)).collect();
    let ref_name = tags.first().map(|t| ref_name_of(t));
    match target {
        IndexTarget::Layout(dest) => {
            write_index_layout(store, dest, &images, index, ref_name.as_deref())
        }
        IndexTarget::Archive(dest) => {
            // The layout is assembled beside the build, then written as one
            // deterministic tar by kiln-image's tar writer.
            let layout = work.join("index-layout");
            let _ = std::fs::remove_dir_all(&layout);
            write_index_layout(store, &layout, &images, index, ref_name.as_deref())?;
            let entries = layout_entries(&layout)?;
            let tar = kiln_image::write_layer(
                store,
                entries,
                &kiln_image::LayerOptions {
                    compression: kiln_image::Compression::None,
                    ..Default::default()
                },
            )?;
            move_out_of_store(store, &tar.digest, dest)
        }
        IndexTarget::PlatformDirs(dest) => {
            for b in built {
                let p = b.stored.manifest.platform.clone().unwrap_or_default();
                let one = Output::Local {
                    dest: platform_dir(dest, &p),
                };
                export_one(store, &one, b, tags)?;
            }
            Ok(())
        }
        IndexTarget::Registry => Ok(()),
    }
}

/// Moves a blob the build wrote only to hand it out (an OCI archive) from the store
/// to `dest`, atomically.
fn move_out_of_store(store: &BlobStore, digest: &Digest, dest: &Path) -> Result<(), ExportError> {
    let src = store.path(digest);
    if std::fs::rename(&src, dest).is_ok() {
        return Ok(());
    }
    let tmp = tmp_path(dest);
    std::fs::copy(&src, &tmp).map_err(|source| ExportError::Write {
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, dest).map_err(|source| ExportError::Write {
        path: dest.to_path_buf(),
        source,
    })?;
    let _ = std::fs::remove_file(&src);
    Ok(())
}
