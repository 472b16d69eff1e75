//! Where a file's side file lives: next to the file, or in a journal directory.
//!
//! Next to the file is the simplest place, but it shares the file's filesystem: fill that
//! filesystem ("disk full") and the side file's append fails before the write it guards,
//! which a real full disk would have failed differently or not at all (an overwrite needs
//! no new space). A journal directory on another filesystem keeps the two apart; there,
//! side files are named after the file's absolute path, so files of the same name in
//! different directories never share one.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::record::fnv1a;

/// The side file's suffix.
pub const SIDE_SUFFIX: &str = ".unsynced";

/// The most bytes of the file's own name kept in a side file's name in a journal
/// directory; with the hash and suffix the name stays within `NAME_MAX` (255).
const NAME_KEPT_MAX: usize = 200;
const _: () = assert!(NAME_KEPT_MAX + 1 + 16 + SIDE_SUFFIX.len() <= 255);

/// What the side file of `file` is called when it lives next to the file (after
/// [`crate::register`]): the file's name with `.unsynced` appended (`idem.db.unsynced`,
/// `idem.db-wal.unsynced`).
#[must_use]
pub fn side_file(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(SIDE_SUFFIX);
    PathBuf::from(name)
}

/// What the side file of `file` is called in `journal_dir` (after
/// [`crate::register_with_journal_dir`]): the file's name, a dot, 16 hex digits of a
/// 64-bit FNV-1a hash of its absolute path (symbolic links resolved, as SQLite does),
/// and `.unsynced` — `journal_dir/idem.db-wal.3f2a9c0b81d4e657.unsynced`. The name is
/// readable, and files of one name in different directories get different side files.
///
/// `file` may be relative or reached through a symbolic link, and need not exist; its
/// directory should, or the path is hashed as given.
#[must_use]
pub fn side_file_in(journal_dir: &Path, file: &Path) -> PathBuf {
    let absolute = resolved(file);
    let name = absolute.file_name().map_or(&[][..], OsStrExt::as_bytes);
    let mut side = OsString::from_vec(name[..name.len().min(NAME_KEPT_MAX)].to_vec());
    side.push(format!(".{:016x}{SIDE_SUFFIX}", fnv1a(absolute.as_os_str().as_bytes())));
    journal_dir.join(side)
}

/// `file` as SQLite names it: absolute, symbolic links resolved. An existing file is
/// resolved whole (a database that is a link names its target, as SQLite's
/// `xFullPathname` does); a missing one by its directory. Anything unresolvable is
/// returned as given.
pub(crate) fn resolved(file: &Path) -> PathBuf {
    if let Ok(found) = std::fs::canonicalize(file) {
        return found;
    }
    let (Some(parent), Some(name)) = (file.parent(), file.file_name()) else { return file.to_path_buf() };
    let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
    std::fs::canonicalize(parent).map_or_else(|_| file.to_path_buf(), |parent| parent.join(name))
}

/// Where this process's side files go, fixed when the VFS is registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Placement {
    /// `file.unsynced`, next to each file ([`side_file`]).
    NextToFile,
    /// In this directory, absolute and resolved ([`side_file_in`]).
    InDir(PathBuf),
}

impl Placement {
    /// The side file of `file`.
    pub(crate) fn side_file(&self, file: &Path) -> PathBuf {
        match self {
            Placement::NextToFile => side_file(file),
            Placement::InDir(dir) => side_file_in(dir, file),
        }
    }

    /// The journal directory, if side files live in one.
    pub(crate) fn dir(&self) -> Option<&Path> {
        match self {
            Placement::NextToFile => None,
            Placement::InDir(dir) => Some(dir),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_side_file_in_a_directory_keeps_the_name_and_tells_directories_apart() {
        let (one, two, journal) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), Path::new("/j"));
        let (a, b) =
            (side_file_in(journal, &one.path().join("idem.db")), side_file_in(journal, &two.path().join("idem.db")));
        assert_ne!(a, b);
        for side in [&a, &b] {
            assert_eq!(side.parent(), Some(journal));
            let name = side.file_name().unwrap().to_str().unwrap();
            assert!(name.starts_with("idem.db.") && name.ends_with(SIDE_SUFFIX), "{name}");
            assert_eq!(name.len(), "idem.db.".len() + 16 + SIDE_SUFFIX.len(), "{name}");
        }
    }

    #[test]
    fn a_relative_or_linked_path_names_the_same_side_file_as_the_resolved_one() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().canonicalize().unwrap().join("real.db");
        std::fs::write(&real, b"").unwrap();
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let journal = Path::new("/j");
        assert_eq!(side_file_in(journal, &link), side_file_in(journal, &real));
        // A file not there yet (a `-wal`) is named by its resolved directory.
        let missing = dir.path().join("real.db-wal");
        assert_eq!(resolved(&missing), real.with_file_name("real.db-wal"));
    }

    #[test]
    fn a_long_file_name_is_cut_to_fit() {
        let long = format!("/data/{}", "x".repeat(300));
        let side = side_file_in(Path::new("/j"), Path::new(&long));
        assert!(side.file_name().unwrap().len() <= 255, "{side:?}");
    }
}
