//! The data directory's format version: `<dir>/FORMAT`, one decimal number and a newline.
//!
//! A build knows the versions in [`KNOWN_VERSIONS`] and writes [`VERSION`] into every data
//! directory it creates. At start-up the file is checked before anything else in the directory
//! is read: a version this build does not know stops start-up with [`Error::UnknownFormat`],
//! naming the file and the known versions, instead of misreading a newer layout. A directory
//! from before the file existed (no `FORMAT`, perhaps a log and a snapshot) is version 1, the
//! layout described in the storage module's documentation, and gets the file. The file is
//! written like every other: to a temporary name, fsynced, renamed, the directory fsynced.

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::Path;

use super::{fsync, io_err, sync_dir, Error};

/// The name of the format version file in the data directory.
pub const FORMAT_FILE: &str = "FORMAT";
/// The temporary name it is written under before its rename.
const FORMAT_TMP_FILE: &str = "FORMAT.tmp";
/// The version this build writes.
pub const VERSION: u32 = 1;
/// Every version this build can open.
pub const KNOWN_VERSIONS: &[u32] = &[1];

/// Checks the version file of `dir` (which exists), writing it when it is missing.
pub(crate) fn check_or_create(dir: &Path) -> Result<u32, Error> {
    let path = dir.join(FORMAT_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let found = text.trim();
            match found.parse::<u32>() {
                Ok(version) if KNOWN_VERSIONS.contains(&version) => Ok(version),
                _ => Err(Error::UnknownFormat {
                    path,
                    found: found.chars().take(40).collect(),
                    known: known_list(),
                }),
            }
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            write(dir)?;
            Ok(VERSION)
        }
        Err(e) => Err(io_err("read", &path, e)),
    }
}

/// Durably writes [`VERSION`] into `dir/FORMAT`.
pub(crate) fn write(dir: &Path) -> Result<(), Error> {
    let tmp = dir.join(FORMAT_TMP_FILE);
    let path = dir.join(FORMAT_FILE);
    let mut file = fs::File::create(&tmp).map_err(|e| io_err("create", &tmp, e))?;
    file.write_all(format!("{VERSION}\n").as_bytes())
        .map_err(|e| io_err("write", &tmp, e))?;
    fsync(&file, &tmp, false)?;
    drop(file);
    fs::rename(&tmp, &path).map_err(|e| io_err("rename", &tmp, e))?;
    sync_dir(dir)
}

/// The known versions as text, e.g. `"1"` or `"1, 2"`.
fn known_list() -> String {
    KNOWN_VERSIONS
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::super::Storage;
    use super::*;

    #[test]
    fn a_new_directory_gets_the_version_and_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        Storage::open(dir.path()).expect("open");
        let text = fs::read_to_string(dir.path().join(FORMAT_FILE)).expect("FORMAT written");
        assert_eq!(text, format!("{VERSION}\n"));
        Storage::open(dir.path()).expect("reopen");
    }

    #[test]
    fn a_directory_from_before_the_file_is_version_1_and_gets_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(Storage::open(dir.path()).expect("open"));
        fs::remove_file(dir.path().join(FORMAT_FILE)).expect("remove FORMAT");
        Storage::open(dir.path()).expect("a log without FORMAT opens");
        let text = fs::read_to_string(dir.path().join(FORMAT_FILE)).expect("FORMAT written");
        assert_eq!(text.trim(), "1");
    }

    #[test]
    fn an_unknown_version_is_refused_naming_the_file_and_the_known_versions() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(Storage::open(dir.path()).expect("open"));
        for bad in ["2\n", "banana"] {
            fs::write(dir.path().join(FORMAT_FILE), bad).expect("write FORMAT");
            let error = Storage::open(dir.path()).expect_err("unknown version");
            let text = error.to_string();
            assert!(matches!(error, Error::UnknownFormat { .. }), "{text}");
            assert!(text.contains(&dir.path().join(FORMAT_FILE).display().to_string()));
            assert!(text.contains("knows version(s) 1"), "{text}");
            assert!(text.contains(bad.trim()), "{text}");
        }
    }
}
