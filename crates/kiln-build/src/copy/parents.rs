//! `COPY --parents`: each source keeps its path below an optional `/./`
//! pivot; the parents it creates take their source directory's metadata.

use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;

use super::copier::{root_err, Copier, Place};
use super::*;

impl Copier<'_, '_> {
    /// `--parents`: `a/b/./c/d` copies `c/d` (below the pivot) to `dest/c/d`;
    /// without a pivot the whole path is kept.
    pub(super) fn copy_parents(&mut self, src: &str, dest: &str) -> Result<(), CopyError> {
        let (base, pattern) = match src.split_once("/./") {
            Some((b, p)) => (if b.is_empty() { "/" } else { b }, p),
            None => ("/", src),
        };
        let outside = || CopyError::OutsideContext {
            src: src.to_string(),
        };
        let base_comps = clean_components(base).ok_or_else(outside)?;
        let pat = clean_components(pattern).ok_or_else(outside)?;
        let root = self.req.src_root;
        let base_r = resolve_in_root(root, &base_comps.join("/"), true, Escape::Reject)
            .map_err(|e| src_resolve_err(e, src))?;
        let base_host = base_r.host(root);
        let mut found = Vec::new();
        if pat.iter().any(|c| has_wildcards(c)) {
            walk_matches(&base_host, &pat, &mut Vec::new(), &mut found);
        } else {
            // A named path must exist (its parents may be symlinks, followed).
            let r = resolve_in_root(&base_host, &pat.join("/"), false, Escape::Reject)
                .map_err(|e| src_resolve_err(e, src))?;
            if std::fs::symlink_metadata(r.host(&base_host)).is_err() {
                return Err(CopyError::NotFound {
                    src: src.to_string(),
                });
            }
            found.push(pat.clone());
        }
        if found.is_empty() {
            return Ok(());
        }
        let dest_dir = self.mkdir_all(dest)?;
        let base_rel = base_r.rel_string();
        for m in found {
            let rel = m.join("/");
            let src_rel = if base_rel.is_empty() {
                rel.clone()
            } else {
                format!("{base_rel}/{rel}")
            };
            if self.excludes.matches(&rel) || self.filtered(&src_rel) {
                continue;
            }
            let Some((last, parents)) = m.split_last() else {
                continue;
            };
            // Parent directories below the pivot take their source's metadata.
            let mut s = base_host.clone();
            let mut cur = dest_dir.try_clone().map_err(root_err(dest))?;
            for comp in parents {
                s.push(comp);
                let c = OsStr::new(comp);
                let t_rel = cur.rel_of(c);
                let smd = std::fs::metadata(&s).map_err(io_err(&s))?;
                match cur.lstat(c).map_err(root_err(&t_rel))? {
                    Some(t) if t.is_dir() => {}
                    Some(_) => return Err(CopyError::NotADirectory { path: t_rel }),
                    None => {
                        cur.mkdir(c, PARENT_DIR_PERM).map_err(root_err(&t_rel))?;
                        let (uid, gid) = self.owner_for(Some(&smd));
                        let meta = Meta {
                            uid,
                            gid,
                            perm: self.perm_for(smd.mode(), true),
                            mtime: Some(mtime_of(&smd)),
                            atime: Some(atime_of(&smd)),
                        };
                        self.deferred.push((t_rel.clone(), meta, Some(s.clone())));
                        self.record(t_rel.clone(), uid, gid);
                    }
                }
                cur = cur.subdir(c).map_err(root_err(&t_rel))?;
            }
            let src_host = base_host.join(&rel);
            self.copy_entry(
                &src_host,
                &src_rel,
                &rel,
                &Place::Open(cur),
                OsStr::new(last),
                true,
            )?;
        }
        Ok(())
    }
}
