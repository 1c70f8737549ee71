//! Build outputs: parsing `--output type=…,dest=…` and writing the built
//! image where the user asked.
//!
//! Parsing is pure; [`export`] dispatches to kiln-image's writers, each of
//! which writes atomically (temp path + rename), so a failed export leaves
//! no half-written result.

use std::path::{Path, PathBuf};

use kiln_image::{BlobStore, Image, StoredImage};

use crate::BuildError;

/// Where a built image goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// An OCI image layout directory, or an OCI archive when `dest` names a
    /// `.tar` file (`type=oci`).
    Oci { dest: PathBuf, archive: bool },
    /// A docker-archive tar that `docker load` / `podman load` accept.
    Docker { dest: PathBuf },
    /// The image's filesystem as a directory (`type=local`).
    Local { dest: PathBuf },
    /// The image's filesystem as one tar (`type=tar`).
    Tar { dest: PathBuf },
    /// A registry image (`type=image,name=…,push=true`).
    Image { names: Vec<String>, push: bool },
}

/// Parses one `--output` value: `type=oci,dest=out`, or a bare path (a
/// local directory, as buildx's `-o DIR`).
pub fn parse_output(spec: &str) -> Result<Output, BuildError> {
    let bad = |message: String| BuildError::BadOutput {
        spec: spec.to_string(),
        message,
    };
    if !spec.contains('=') {
        if spec.is_empty() {
            return Err(bad("empty output".into()));
        }
        return Ok(Output::Local {
            dest: PathBuf::from(spec),
        });
    }
    let mut kind = None;
    let mut dest = None;
    let mut names = Vec::new();
    let mut push = false;
    for field in spec.split(',') {
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| bad(format!("`{field}` is not key=value")))?;
        match key.trim() {
            "type" => kind = Some(value.trim().to_string()),
            "dest" => dest = Some(PathBuf::from(value)),
            "name" => names.extend(value.split(';').map(str::to_string)),
            "push" => {
                push = match value {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    other => return Err(bad(format!("push={other}: expected true or false"))),
                }
            }
            // Accepted for compatibility; kiln's layouts need no extra keys.
            "tar" | "oci-mediatypes" | "compression" | "compression-level"
            | "force-compression" => {}
            other => return Err(bad(format!("unknown key `{other}`"))),
        }
    }
    let kind = kind.ok_or_else(|| bad("missing type=".into()))?;
    let need_dest =
        |dest: Option<PathBuf>| dest.ok_or_else(|| bad(format!("type={kind} needs dest=")));
    match kind.as_str() {
        "oci" => {
            let dest = need_dest(dest)?;
            let archive = is_tar_name(&dest);
            Ok(Output::Oci { dest, archive })
        }
        "docker" => Ok(Output::Docker {
            dest: need_dest(dest)?,
        }),
        "local" => Ok(Output::Local {
            dest: need_dest(dest)?,
        }),
        "tar" => Ok(Output::Tar {
            dest: need_dest(dest)?,
        }),
        "image" | "registry" => {
            if names.is_empty() {
                return Err(bad(format!("type={kind} needs name=")));
            }
            Ok(Output::Image {
                names,
                push: push || kind == "registry",
            })
        }
        other => Err(bad(format!(
            "unknown type `{other}` (expected oci, docker, local, tar, image or registry)"
        ))),
    }
}

fn is_tar_name(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "tar")
}

/// Writes `image` to a file or directory output. Registry outputs are
/// handled by the caller.
pub fn export(
    store: &BlobStore,
    output: &Output,
    image: &Image,
    stored: &StoredImage,
    tags: &[String],
) -> Result<(), BuildError> {
    let ref_name = tags.first().map(|t| ref_name_of(t));
    match output {
        Output::Oci {
            dest,
            archive: false,
        } => kiln_image::write_oci_layout(store, dest, &[(stored.clone(), ref_name)])?,
        Output::Oci {
            dest,
            archive: true,
        } => kiln_image::write_oci_archive(store, dest, &[(stored.clone(), ref_name)])?,
        Output::Docker { dest } => kiln_image::write_docker_archive(store, dest, stored, tags)?,
        Output::Local { dest } => kiln_image::write_rootfs_dir(store, image, dest)?,
        Output::Tar { dest } => kiln_image::write_rootfs_tar(store, image, dest)?,
        Output::Image { .. } => {}
    }
    Ok(())
}

/// The `org.opencontainers.image.ref.name` for a tag: the tag part of
/// `registry/repo:tag`, or the whole value when it has no tag.
pub fn ref_name_of(tag: &str) -> String {
    let last = tag.rsplit('/').next().unwrap_or(tag);
    match last.split_once(':') {
        Some((_, t)) if !t.is_empty() => t.to_string(),
        _ => "latest".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_type() {
        assert_eq!(
            parse_output("type=oci,dest=out").ok(),
            Some(Output::Oci {
                dest: "out".into(),
                archive: false
            })
        );
        assert_eq!(
            parse_output("type=oci,dest=img.tar").ok(),
            Some(Output::Oci {
                dest: "img.tar".into(),
                archive: true
            })
        );
        assert_eq!(
            parse_output("type=docker,dest=d.tar").ok(),
            Some(Output::Docker {
                dest: "d.tar".into()
            })
        );
        assert_eq!(
            parse_output("type=local,dest=root").ok(),
            Some(Output::Local {
                dest: "root".into()
            })
        );
        assert_eq!(
            parse_output("type=tar,dest=fs.tar").ok(),
            Some(Output::Tar {
                dest: "fs.tar".into()
            })
        );
        assert_eq!(
            parse_output("type=image,name=a/b:1;a/b:2,push=true").ok(),
            Some(Output::Image {
                names: vec!["a/b:1".into(), "a/b:2".into()],
                push: true
            })
        );
        assert_eq!(
            parse_output("somedir").ok(),
            Some(Output::Local {
                dest: "somedir".into()
            })
        );
    }

    #[test]
    fn rejects_bad_specs() {
        for (spec, needle) in [
            ("type=oci", "needs dest="),
            ("type=nope,dest=x", "unknown type `nope`"),
            ("dest=x", "missing type="),
            ("type=oci,dest=x,colour=red", "unknown key `colour`"),
            ("type=image", "needs name="),
            ("type=image,name=x,push=maybe", "push=maybe"),
            ("type=oci,dest", "is not key=value"),
        ] {
            let err = parse_output(spec).err().map(|e| e.to_string());
            assert!(
                err.as_deref()
                    .is_some_and(|e| e.contains(needle) && e.contains(spec)),
                "{spec}: {err:?}"
            );
        }
    }

    #[test]
    fn ref_names() {
        assert_eq!(ref_name_of("localhost:5000/a/b:v1"), "v1");
        assert_eq!(ref_name_of("localhost:5000/a/b"), "latest");
        assert_eq!(ref_name_of("app:dev"), "dev");
    }
}
