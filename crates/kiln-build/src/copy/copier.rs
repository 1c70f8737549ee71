//! The copier: one COPY/ADD step's state (the stage [`Root`], owner and
//! mode rules, excludes, hardlinks seen, deferred directory metadata) and
//! the copy of source trees into the stage. Every write acts on an open
//! directory of the stage root and a final name that is never followed.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::*;

pub(super) struct Copier<'r, 'a> {
    pub(super) req: &'r CopyRequest<'a>,
    /// The stage root every write goes through.
    pub(super) root: Root,
    pub(super) chown: Option<(u32, u32)>,
    pub(super) chmod: Option<Chmod>,
    pub(super) excludes: PatternSet,
    pub(super) changed: Vec<Changed>,
    /// Source (dev, inode) → destination path (below the root) already
    /// written, for hardlinks.
    pub(super) links: HashMap<(u64, u64), String>,
    /// Directories (paths below the root) whose metadata is applied after
    /// their contents are written, with the source of their xattrs.
    pub(super) deferred: Vec<(String, Meta, Option<PathBuf>)>,
    /// Planning ([`plan`]): entries are not written, only noted here
    /// (stage path → the source they would be copied from).
    pub(super) planned: Option<HashMap<String, PathBuf>>,
    /// Files hard-linked to their source rather than copied.
    pub(super) linked: usize,
}

/// Where the entries of a copied directory go: a directory of the stage
/// root held open, or, when planning, only its path below the root (the
/// directory does not exist).
pub(super) enum Place {
    Open(Dir),
    Planned(String),
}

impl Place {
    pub(super) fn rel_of(&self, name: &OsStr) -> String {
        match self {
            Place::Open(dir) => dir.rel_of(name),
            Place::Planned(rel) if rel.is_empty() => name.to_string_lossy().into_owned(),
            Place::Planned(rel) => format!("{rel}/{}", name.to_string_lossy()),
        }
    }
}

/// A [`RootError`] met while writing `path` (a destination as the
/// Dockerfile names it, or a path below the stage root).
pub(super) fn root_err(path: &str) -> impl FnOnce(RootError) -> CopyError + '_ {
    move |e| match e {
        RootError::NotADirectory { at, .. } => CopyError::NotADirectory { path: at },
        RootError::TooManyLinks { .. } => CopyError::TooManyLinks {
            src: path.to_string(),
        },
        RootError::Escapes { .. } => CopyError::OutsideContext {
            src: path.to_string(),
        },
        e => CopyError::Io {
            path: path.to_string(),
            error: e.into(),
        },
    }
}

impl<'r, 'a> Copier<'r, 'a> {
    pub(super) fn new(
        req: &'r CopyRequest<'a>,
        chown: Option<(u32, u32)>,
        chmod: Option<Chmod>,
        planning: bool,
    ) -> Result<Self, CopyError> {
        let pats: Vec<&str> = req.exclude.iter().map(String::as_str).collect();
        let excludes = PatternSet::new(&pats).map_err(|e| CopyError::BadExclude {
            message: e.to_string(),
        })?;
        let root = Root::open(req.dest_root).map_err(root_err("/"))?;
        Ok(Copier {
            req,
            root,
            chown,
            chmod,
            excludes,
            changed: Vec::new(),
            links: HashMap::new(),
            deferred: Vec::new(),
            planned: planning.then(HashMap::new),
            linked: 0,
        })
    }

    pub(super) fn record(&mut self, rel: String, uid: u32, gid: u32) {
        if !rel.is_empty() {
            self.changed.push(Changed {
                path: rel,
                uid,
                gid,
            });
        }
    }

    pub(super) fn filtered(&self, rel: &str) -> bool {
        match self.req.src_filter {
            Some(f) => !rel.is_empty() && f.matches(rel),
            None => false,
        }
    }

    /// Whether an excluded directory may still hold entries that an
    /// exception (`!pattern`) brings back, so the walk must go in.
    pub(super) fn may_descend(&self, rel: &str, src_rel: &str) -> bool {
        let by_exclude =
            !self.excludes.matches(rel) || self.excludes.may_have_included_children(rel);
        let by_filter = match self.req.src_filter {
            Some(f) => !f.matches(src_rel) || f.may_have_included_children(src_rel),
            None => true,
        };
        by_exclude && by_filter
    }

    /// Whether the copy of a file with source metadata `md` would be the
    /// same inode metadata as the source's, and may be a hard link to it
    /// ([`CopyRequest::link_unchanged`]).
    pub(super) fn link_unchanged(&self, md: &std::fs::Metadata, meta: &Meta) -> bool {
        self.req.link_unchanged
            && meta.uid == md.uid()
            && meta.gid == md.gid()
            && meta.perm == md.mode() & 0o7777
            && meta.mtime == Some(mtime_of(md))
    }

    /// Owner for an entry whose source metadata is `md`.
    pub(super) fn owner_for(&self, md: Option<&std::fs::Metadata>) -> (u32, u32) {
        match (self.chown, md) {
            (Some(o), _) => o,
            (None, Some(md)) if self.req.preserve_owner => (md.uid(), md.gid()),
            _ => (0, 0),
        }
    }

    /// Mode for the destination directory that a directory copy creates: it
    /// stands for the copied directory's root, so `--chmod` applies to it.
    pub(super) fn copied_root_perm(&self) -> u32 {
        match &self.chmod {
            Some(c) => c.apply(0o040755, true) & 0o7777,
            None => PARENT_DIR_PERM,
        }
    }

    pub(super) fn perm_for(&self, mode: u32, is_dir: bool) -> u32 {
        match &self.chmod {
            Some(c) => c.apply(mode, is_dir) & 0o7777,
            None => mode & 0o7777,
        }
    }

    /// Creates `path` (absolute in the stage) and its missing parents, all
    /// mode 0755 (never the `--chmod` mode, as Docker's builder does);
    /// returns the directory.
    pub(super) fn mkdir_all(&mut self, path: &str) -> Result<Dir, CopyError> {
        self.mkdir_all_leaf(path, PARENT_DIR_PERM)
    }

    /// [`Self::mkdir_all`], but `path` itself, when created, gets `leaf_perm`.
    /// Symlinks on the way are followed inside the stage root only.
    pub(super) fn mkdir_all_leaf(&mut self, path: &str, leaf_perm: u32) -> Result<Dir, CopyError> {
        let (uid, gid) = self.chown.unwrap_or((0, 0));
        let resolved = self
            .root
            .dir(
                path,
                Some(NewDir {
                    mode: PARENT_DIR_PERM,
                    owner: Some((uid, gid)),
                }),
            )
            .map_err(root_err(path))?
            .ok_or_else(|| CopyError::NotADirectory {
                path: path.to_string(),
            })?;
        let rel = resolved.dir.rel();
        if resolved.created.last() == Some(&rel) && leaf_perm != PARENT_DIR_PERM {
            resolved.dir.chmod_self(leaf_perm).map_err(root_err(path))?;
        }
        for c in resolved.created {
            self.record(c, uid, gid);
        }
        Ok(resolved.dir)
    }

    /// The directory holding `rel` (a path below the root whose parents
    /// exist) and its last name; the name itself is never followed.
    pub(super) fn at(&self, rel: &str) -> Result<(Dir, OsString), CopyError> {
        match self.root.parent(rel, None).map_err(root_err(rel))? {
            Some((parent, name)) => Ok((parent.dir, name)),
            None => Err(CopyError::Io {
                path: format!("/{rel}"),
                error: io::Error::from(io::ErrorKind::NotFound),
            }),
        }
    }

    /// A destination resolved in the stage (symlinks followed inside it):
    /// its path below the root, and whether it exists as a directory
    /// (`Some(true)`), as something else (`Some(false)`) or not at all.
    pub(super) fn dest_entry(&self, path: &str) -> Result<(String, Option<bool>), CopyError> {
        let comps = self
            .root
            .resolve(path, true, false)
            .map_err(root_err(path))?;
        let rel = comps
            .iter()
            .map(|c| c.to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        if rel.is_empty() {
            return Ok((rel, Some(true)));
        }
        let kind = match self.root.parent(&rel, None) {
            Ok(Some((parent, name))) => parent
                .dir
                .lstat(&name)
                .map_err(root_err(path))?
                .map(|st| st.is_dir()),
            Ok(None) | Err(RootError::NotADirectory { .. }) => None,
            Err(e) => return Err(root_err(path)(e)),
        };
        Ok((rel, kind))
    }

    /// Opens the existing directory at `rel` (resolved, below the root).
    pub(super) fn open_dir(&self, rel: &str) -> Result<Dir, CopyError> {
        match self.root.dir(rel, None).map_err(root_err(rel))? {
            Some(r) => Ok(r.dir),
            None => Err(CopyError::NotADirectory {
                path: rel.to_string(),
            }),
        }
    }

    /// Where a non-directory named `name` goes for destination `dest`: the
    /// directory and the name in it.
    pub(super) fn file_target(
        &mut self,
        name: &str,
        dest: &str,
        dest_is_dir: bool,
    ) -> Result<(Dir, OsString), CopyError> {
        if dest_is_dir {
            let dir = self.mkdir_all(dest)?;
            return Ok((dir, OsString::from(name)));
        }
        let parent = parent_of(dest);
        self.mkdir_all(&parent)?;
        match self.dest_entry(dest)? {
            (rel, Some(true)) => Ok((self.open_dir(&rel)?, OsString::from(name))),
            (rel, _) => self.at(&rel),
        }
    }

    pub(super) fn copy_local(
        &mut self,
        src: &str,
        dest: &str,
        dest_is_dir: bool,
    ) -> Result<(), CopyError> {
        let sources = self.resolve_sources(src)?;
        let unpack = match &self.req.add {
            Some(add) => add.unpack.unwrap_or(true),
            None => false,
        };
        for s in sources {
            if let Some(m) = &s.match_rel {
                if self.excludes.matches(m) {
                    continue;
                }
            }
            let md = std::fs::symlink_metadata(&s.host).map_err(io_err(&s.host))?;
            if unpack && md.is_file() {
                let is_archive = crate::unpack::detect_archive(&s.host)
                    .map_err(|error| CopyError::Unpack {
                        archive: src.to_string(),
                        error,
                    })?
                    .is_some();
                if is_archive {
                    self.unpack_into(&s.host, src, dest)?;
                    continue;
                }
            }
            if md.is_dir() {
                let target = match self.dest_entry(dest)? {
                    (rel, Some(true)) => self.open_dir(&rel)?,
                    (rel, Some(false)) => {
                        return Err(CopyError::DirOntoFile {
                            src: src.to_string(),
                            path: rel,
                        })
                    }
                    (_, None) => {
                        let perm = self.copied_root_perm();
                        self.mkdir_all_leaf(dest, perm)?
                    }
                };
                self.copy_children(&s.host, &s.rel, "", &Place::Open(target))?;
            } else {
                let (dir, name) = self.file_target(&s.name, dest, dest_is_dir)?;
                self.copy_entry(&s.host, &s.rel, "", &Place::Open(dir), &name, false)?;
            }
        }
        Ok(())
    }

    pub(super) fn resolve_sources(&self, src: &str) -> Result<Vec<Source>, CopyError> {
        resolve_sources_in(self.req.src_root, self.req.src_filter, src)
    }

    /// Copies the entries of directory `src` into `target`.
    pub(super) fn copy_children(
        &mut self,
        src: &Path,
        src_rel: &str,
        rel: &str,
        target: &Place,
    ) -> Result<(), CopyError> {
        let mut names: Vec<_> = std::fs::read_dir(src)
            .map_err(io_err(src))?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        names.sort();
        for name in names {
            let n = name.to_string_lossy();
            let child_rel = if rel.is_empty() {
                n.to_string()
            } else {
                format!("{rel}/{n}")
            };
            let child_src_rel = if src_rel.is_empty() {
                n.to_string()
            } else {
                format!("{src_rel}/{n}")
            };
            self.copy_entry(
                &src.join(&name),
                &child_src_rel,
                &child_rel,
                target,
                &name,
                true,
            )?;
        }
        Ok(())
    }

    /// Copies one entry (recursively for directories) to `name` in
    /// `target`. `rel` is its path below the copied source ("" for the
    /// source itself), `overwrite` whether an existing directory there
    /// takes its metadata. Everything is written through the open
    /// directory: the name is never followed, and what the stage holds
    /// there (a symlink, a file) is replaced, never written through.
    pub(super) fn copy_entry(
        &mut self,
        src: &Path,
        src_rel: &str,
        rel: &str,
        target: &Place,
        name: &OsStr,
        overwrite: bool,
    ) -> Result<(), CopyError> {
        let excluded = !rel.is_empty() && (self.excludes.matches(rel) || self.filtered(src_rel));
        let md = std::fs::symlink_metadata(src).map_err(io_err(src))?;
        let ft = md.file_type();
        if excluded && !(ft.is_dir() && self.may_descend(rel, src_rel)) {
            return Ok(());
        }
        let (uid, gid) = self.owner_for(Some(&md));
        let dir = match target {
            Place::Open(dir) if self.planned.is_none() => dir,
            _ => {
                return self.plan_entry(src, src_rel, rel, target, name, excluded, &md, (uid, gid))
            }
        };
        let meta = Meta {
            uid,
            gid,
            perm: self.perm_for(md.mode(), ft.is_dir()),
            mtime: Some(mtime_of(&md)),
            atime: Some(atime_of(&md)),
        };
        let dest_rel = dir.rel_of(name);
        if ft.is_dir() {
            let created = match dir.lstat(name).map_err(root_err(&dest_rel))? {
                Some(t) if t.is_dir() => false,
                Some(_) => {
                    return Err(CopyError::DirOntoFile {
                        src: src.display().to_string(),
                        path: dest_rel,
                    })
                }
                None => {
                    dir.mkdir(name, PARENT_DIR_PERM)
                        .map_err(root_err(&dest_rel))?;
                    true
                }
            };
            let sub = dir.subdir(name).map_err(root_err(&dest_rel))?;
            let before = self.changed.len();
            self.copy_children(src, src_rel, rel, &Place::Open(sub))?;
            if excluded && self.changed.len() == before {
                // Nothing below an excluded directory came back through an
                // exception: the directory itself stays out.
                if created {
                    let _ = dir.remove_all(name);
                }
                return Ok(());
            }
            if created || overwrite {
                apply_meta_at(dir, name, &meta, false).map_err(root_err(&dest_rel))?;
                copy_xattrs_at(src, dir, name);
                self.record(dest_rel, uid, gid);
            }
            return Ok(());
        }
        match dir.lstat(name).map_err(root_err(&dest_rel))? {
            Some(t) if t.is_dir() => {
                return Err(CopyError::CannotReplaceDir { path: dest_rel });
            }
            Some(_) => dir.remove_all(name).map_err(root_err(&dest_rel))?,
            None => {}
        }
        let key = (md.dev(), md.ino());
        if ft.is_file() && md.nlink() > 1 {
            if let Some(first) = self.links.get(&key).cloned() {
                let (first_dir, first_name) = self.at(&first)?;
                let tmp = temp_name();
                dir.link_from(&tmp, &first_dir, &first_name)
                    .map_err(root_err(&dest_rel))?;
                rename_or_clean(dir, &tmp, name)?;
                self.record(dest_rel, uid, gid);
                return Ok(());
            }
        }
        if ft.is_file() && self.link_unchanged(&md, &meta) {
            // A link is one metadata write where a copy is a create, the
            // data, and four metadata writes: tens of thousands of files
            // (a Python venv) go from seconds to a fraction of one. Any
            // failure (another filesystem, too many links) falls back to
            // copying.
            if dir.link_path(name, src).is_ok() {
                self.linked += 1;
                if md.nlink() > 1 {
                    self.links.insert(key, dest_rel.clone());
                }
                self.record(dest_rel, uid, gid);
                return Ok(());
            }
        }
        let tmp = temp_name();
        let made = (|| -> io::Result<()> {
            if ft.is_file() {
                let mut from = std::fs::File::open(src)?;
                let mut to = dir.create_file(&tmp, 0o600)?;
                // No fsync: the stage root is scratch space that a crashed
                // build throws away; durability is the blob store's job
                // (layers are fsynced there). An fsync per file made large
                // COPYs disk-bound.
                io::copy(&mut from, &mut to)?;
                apply_meta_fd(&to, &meta)?;
                copy_xattrs_fd(src, &to);
                return Ok(());
            }
            if ft.is_symlink() {
                let link = std::fs::read_link(src)?;
                dir.symlink(&tmp, link.as_os_str())?;
            } else {
                let (kind, rdev) = if ft.is_fifo() {
                    (FileType::Fifo, 0)
                } else if ft.is_char_device() {
                    (FileType::CharacterDevice, md.rdev())
                } else if ft.is_block_device() {
                    (FileType::BlockDevice, md.rdev())
                } else {
                    return Err(io::Error::new(io::ErrorKind::Unsupported, "socket"));
                };
                dir.mknod(&tmp, kind, meta.perm, rdev)?;
            }
            apply_meta_at(dir, &tmp, &meta, ft.is_symlink())?;
            copy_xattrs_at(src, dir, &tmp);
            Ok(())
        })();
        if let Err(error) = made {
            let _ = dir.remove_all(&tmp);
            if error.kind() == io::ErrorKind::Unsupported {
                return Err(CopyError::Unsupported {
                    path: src.display().to_string(),
                });
            }
            return Err(CopyError::Io {
                path: src.display().to_string(),
                error,
            });
        }
        rename_or_clean(dir, &tmp, name)?;
        if ft.is_file() && md.nlink() > 1 {
            self.links.insert(key, dest_rel.clone());
        }
        self.record(dest_rel, uid, gid);
        Ok(())
    }

    /// [`Self::copy_entry`] when planning: notes the entry (a directory
    /// only if something in it is copied when it is excluded) without
    /// writing anything; the destination is known not to exist.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn plan_entry(
        &mut self,
        src: &Path,
        src_rel: &str,
        rel: &str,
        target: &Place,
        name: &OsStr,
        excluded: bool,
        md: &std::fs::Metadata,
        (uid, gid): (u32, u32),
    ) -> Result<(), CopyError> {
        let ft = md.file_type();
        if ft.is_socket() {
            return Err(CopyError::Unsupported {
                path: src.display().to_string(),
            });
        }
        let dest_rel = target.rel_of(name);
        let before = self.changed.len();
        if ft.is_dir() {
            self.copy_children(src, src_rel, rel, &Place::Planned(dest_rel.clone()))?;
            if excluded && self.changed.len() == before {
                return Ok(());
            }
        }
        self.record(dest_rel, uid, gid);
        if let (Some(planned), Some(ch)) = (self.planned.as_mut(), self.changed.last()) {
            planned.insert(ch.path.clone(), src.to_path_buf());
        }
        Ok(())
    }
    /// Applies metadata of directories created before their contents.
    pub(super) fn finish_deferred(&mut self) -> Result<(), CopyError> {
        while let Some((rel, meta, src)) = self.deferred.pop() {
            let (dir, name) = self.at(&rel)?;
            apply_meta_at(&dir, &name, &meta, false).map_err(root_err(&rel))?;
            if let Some(src) = src {
                copy_xattrs_at(&src, &dir, &name);
            }
        }
        Ok(())
    }
}
/// Renames the new entry `tmp` over `name` in `dir`, removing `tmp` when
/// that fails.
pub(super) fn rename_or_clean(dir: &Dir, tmp: &OsStr, name: &OsStr) -> Result<(), CopyError> {
    if let Err(e) = dir.rename(tmp, dir, name) {
        let _ = dir.remove_all(tmp);
        return Err(root_err(&dir.rel_of(name))(e));
    }
    Ok(())
}

/// Removes whatever non-directory is at `name` in `dir` (never following
/// it) so that a new entry can take its place; a directory there is an
/// error.
pub(super) fn clear_non_dir(dir: &Dir, name: &OsStr, dest_rel: &str) -> Result<(), CopyError> {
    match dir.lstat(name).map_err(root_err(dest_rel))? {
        Some(st) if st.is_dir() => Err(CopyError::CannotReplaceDir {
            path: dest_rel.to_string(),
        }),
        Some(_) => dir.remove_all(name).map_err(root_err(dest_rel)),
        None => Ok(()),
    }
}

/// A new entry's temporary name, unique in this process, in the directory
/// it is renamed in (so the rename is atomic).
pub(super) fn temp_name() -> OsString {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    OsString::from(format!(".kiln-tmp-{}-{n}", std::process::id()))
}

pub(super) fn parent_of(path: &str) -> String {
    match path.rsplit_once('/') {
        Some(("", _)) | None => "/".to_string(),
        Some((p, _)) => p.to_string(),
    }
}
