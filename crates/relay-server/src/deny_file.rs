//! The deny list on disk (`RELAY_STATE_DIR`), so a cancelled booking stays refused after
//! a restart.
//!
//! One JSON file, `deny-list.json`: `{"version":1,"denied":{"<booking id>":<exp>,…}}`.
//! It is rewritten whole on every change of the deny list (deny, admin allow, pruning),
//! atomically: a temporary file in the same directory is written and fsynced, then
//! renamed over the old one, and the directory is fsynced. A crash leaves the old list or
//! the new one, never half of either. At start-up the file is read back and expired
//! entries are dropped; a file that cannot be read or parsed stops the start-up with its
//! path in the message.
//!
//! The allow list is not saved: it is informational (nothing is refused or admitted
//! because of it), and every session request updates it, which must not cost a disk
//! write.

use relay_auth::DenyStore;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Name of the state file inside the state directory.
pub const FILE_NAME: &str = "deny-list.json";
const VERSION: u32 = 1;

/// The state file could not be read, parsed or written.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct StateFileError {
    /// The file (or directory) concerned.
    pub path: PathBuf,
    /// What went wrong.
    pub reason: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Contents {
    version: u32,
    denied: BTreeMap<String, i64>,
}

/// Where the deny list is saved; writes are serialised so the file always ends with the
/// latest list.
pub struct DenyFile {
    path: PathBuf,
    dir: PathBuf,
    writing: Mutex<()>,
}

impl DenyFile {
    /// Open (creating the directory if needed) and read the state file in `dir`; returns
    /// the file and the entries still in force at `now` (unix seconds). A missing file is
    /// an empty list.
    pub fn open(dir: &Path, now: i64) -> Result<(Self, Vec<(String, i64)>), StateFileError> {
        std::fs::create_dir_all(dir).map_err(|e| StateFileError {
            path: dir.to_owned(),
            reason: format!("cannot create the state directory: {e}"),
        })?;
        let path = dir.join(FILE_NAME);
        let entries = match std::fs::read(&path) {
            Ok(bytes) => parse(&bytes).map_err(|reason| StateFileError {
                path: path.clone(),
                reason,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(StateFileError {
                    path,
                    reason: format!("cannot read: {e}"),
                })
            }
        };
        let live = entries.into_iter().filter(|(_, exp)| *exp >= now).collect();
        let file = DenyFile {
            path,
            dir: dir.to_owned(),
            writing: Mutex::new(()),
        };
        Ok((file, live))
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write `store`'s deny list atomically. The snapshot is taken while holding the
    /// write lock, so when concurrent saves finish the file holds the latest list.
    pub fn save(&self, store: &DenyStore) -> Result<(), StateFileError> {
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let contents = Contents {
            version: VERSION,
            denied: store.denied_entries().into_iter().collect(),
        };
        self.write(&contents).map_err(|e| StateFileError {
            path: self.path.clone(),
            reason: format!("cannot write: {e}"),
        })
    }

    fn write(&self, contents: &Contents) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(contents).map_err(std::io::Error::other)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".deny-list.")
            .suffix(".tmp")
            .tempfile_in(&self.dir)?;
        tmp.write_all(&json)?;
        tmp.write_all(b"\n")?;
        tmp.as_file().sync_all()?;
        tmp.persist(&self.path).map_err(|e| e.error)?;
        // The rename itself is durable once the directory is synced.
        std::fs::File::open(&self.dir)?.sync_all()
    }
}

fn parse(bytes: &[u8]) -> Result<Vec<(String, i64)>, String> {
    let contents: Contents =
        serde_json::from_slice(bytes).map_err(|e| format!("not a deny list file: {e}"))?;
    if contents.version != VERSION {
        return Err(format!(
            "unsupported version {} (expected {VERSION})",
            contents.version
        ));
    }
    Ok(contents.denied.into_iter().collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn saved_entries_come_back_and_expired_ones_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (file, loaded) = DenyFile::open(dir.path(), 100).unwrap();
        assert!(loaded.is_empty());
        let store = DenyStore::new();
        store.deny("old", 150);
        store.deny("new", 500);
        file.save(&store).unwrap();
        let (_, loaded) = DenyFile::open(dir.path(), 200).unwrap();
        assert_eq!(loaded, [("new".to_owned(), 500)]);
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [FILE_NAME]);
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(FILE_NAME),
            b"{\"version\":1,\"denied\":{\"a\":",
        )
        .unwrap();
        let err = DenyFile::open(dir.path(), 0).err().unwrap();
        assert_eq!(err.path, dir.path().join(FILE_NAME));
        assert!(err.to_string().contains(FILE_NAME), "{err}");
        std::fs::write(dir.path().join(FILE_NAME), b"{\"version\":9,\"denied\":{}}").unwrap();
        assert!(DenyFile::open(dir.path(), 0)
            .err()
            .unwrap()
            .reason
            .contains("version 9"));
    }
}
