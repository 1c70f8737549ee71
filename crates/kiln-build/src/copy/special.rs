//! Entries that do not come from a source tree: ADD of archives (local or
//! downloaded) and of URLs, and `COPY <<EOF` heredocs.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::Path;

use super::copier::{clear_non_dir, rename_or_clean, root_err, temp_name, Copier};
use super::*;

impl Copier<'_, '_> {
    /// ADD of a local or downloaded archive: extracted into `dest`, which
    /// is the root the archive's own paths and symlinks stay inside.
    pub(super) fn unpack_into(
        &mut self,
        archive: &Path,
        shown: &str,
        dest: &str,
    ) -> Result<(), CopyError> {
        let dir = self.mkdir_all(dest)?;
        let below = self.root.below(&dir).map_err(root_err(dest))?;
        let written = crate::unpack::unpack_archive(archive, &below, &dir.rel(), self.chown)
            .map_err(|error| CopyError::Unpack {
                archive: shown.to_string(),
                error,
            })?;
        self.changed.extend(written);
        Ok(())
    }

    pub(super) fn write_heredoc(
        &mut self,
        name: &str,
        body: &str,
        dest: &str,
        dest_is_dir: bool,
    ) -> Result<(), CopyError> {
        let base = name.rsplit('/').next().unwrap_or(name).to_string();
        let (dir, file, dest_rel, meta) =
            self.new_file_target(&base, dest, dest_is_dir, 0o100644, now())?;
        let (uid, gid) = (meta.uid, meta.gid);
        let tmp = temp_name();
        let made = (|| -> io::Result<()> {
            let mut f = dir.create_file(&tmp, 0o600)?;
            io::Write::write_all(&mut f, body.as_bytes())?;
            apply_meta_fd(&f, &meta)
        })();
        if let Err(error) = made {
            let _ = dir.remove_all(&tmp);
            return Err(CopyError::Io {
                path: format!("/{dest_rel}"),
                error,
            });
        }
        rename_or_clean(&dir, &tmp, &file)?;
        self.record(dest_rel, uid, gid);
        Ok(())
    }

    pub(super) fn add_url(
        &mut self,
        url: &str,
        add: &AddOptions,
        dest: &str,
        dest_is_dir: bool,
    ) -> Result<(), CopyError> {
        let expected = match &add.checksum {
            Some(sum) => Some(parse_checksum(sum)?),
            None => None,
        };
        // Download into a new file at the top of the stage root (same
        // filesystem, so the final rename is atomic; created exclusively,
        // so nothing the stage holds is followed); nothing is visible at
        // the destination until verified.
        let tmp = tempfile::Builder::new()
            .prefix(".kiln-fetch-")
            .tempfile_in(self.req.dest_root)
            .map_err(io_err(self.req.dest_root))?;
        let fetched = add.http.fetch(url, tmp.path())?;
        if let Some(expected) = expected {
            if expected != fetched.sha256 {
                return Err(CopyError::ChecksumMismatch {
                    url: url.to_string(),
                    expected: format!("sha256:{expected}"),
                    actual: format!("sha256:{}", fetched.sha256),
                });
            }
        }
        if add.unpack == Some(true)
            && crate::unpack::detect_archive(tmp.path())
                .map_err(|error| CopyError::Unpack {
                    archive: url.to_string(),
                    error,
                })?
                .is_some()
        {
            return self.unpack_into(tmp.path(), url, dest);
        }
        let mtime = fetched.last_modified.map(|s| (s, 0)).unwrap_or_else(now);
        let (dir, file, dest_rel, meta) =
            self.new_file_target(&fetched.file_name, dest, dest_is_dir, 0o100600, mtime)?;
        let (uid, gid) = (meta.uid, meta.gid);
        let io_dest = |error| CopyError::Io {
            path: format!("/{dest_rel}"),
            error,
        };
        apply_meta_fd(tmp.as_file(), &meta).map_err(io_dest)?;
        let tmp_name = tmp
            .path()
            .file_name()
            .map(OsStr::to_os_string)
            .unwrap_or_default();
        let top = self.root.top().map_err(root_err("/"))?;
        // Renamed through descriptors; only then is the temporary name kept
        // from being removed (it no longer exists).
        let tmp = tmp.into_temp_path();
        top.rename(&tmp_name, &dir, &file)
            .map_err(root_err(&dest_rel))?;
        let _ = tmp.keep();
        self.record(dest_rel, uid, gid);
        Ok(())
    }

    /// Where a file this step makes from nothing (a heredoc, a download)
    /// goes: the directory, the name, its path below the root (anything but
    /// a directory there removed), and its metadata: the `--chown` owner,
    /// `mode` under `--chmod`, and `mtime`.
    fn new_file_target(
        &mut self,
        name: &str,
        dest: &str,
        dest_is_dir: bool,
        mode: u32,
        mtime: (i64, i64),
    ) -> Result<(Dir, OsString, String, Meta), CopyError> {
        let (dir, file) = self.file_target(name, dest, dest_is_dir)?;
        let dest_rel = dir.rel_of(&file);
        clear_non_dir(&dir, &file, &dest_rel)?;
        let (uid, gid) = self.chown.unwrap_or((0, 0));
        let meta = Meta {
            uid,
            gid,
            perm: self.perm_for(mode, false),
            mtime: Some(mtime),
            atime: None,
        };
        Ok((dir, file, dest_rel, meta))
    }
}
