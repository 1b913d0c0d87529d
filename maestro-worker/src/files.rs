//! Which files a SUT URL may make this worker read. A SUT URL comes in a note, from
//! whoever commands the cluster; the files it names (TLS certificates and keys, librdkafka's
//! `*.location` properties) are read only under the folder the worker was started with
//! (`--files-dir`). A worker started without one reads none.

use maestro_protocol::SutUrl;
use std::path::{Path, PathBuf};

/// A file named in a SUT URL that this worker will not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilesError {
    #[error(
        "SUT URL names a file ({key}={path:?}), and this worker reads none: start it with --files-dir DIR (env MAESTRO_FILES_DIR) and keep the file under DIR"
    )]
    NoDir { key: String, path: String },
    #[error(
        "SUT URL names {key}={path:?}, which is not under this worker's --files-dir {dir} (links and '..' followed)"
    )]
    Outside {
        key: String,
        path: String,
        dir: String,
    },
    #[error("SUT URL names {key}={path:?}, which this worker cannot open: {reason}")]
    Missing {
        key: String,
        path: String,
        reason: String,
    },
}

/// The folder files named in SUT URLs must be under (canonical), or none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilesDir(Option<PathBuf>);

impl FilesDir {
    /// No file may be read.
    pub fn none() -> Self {
        Self(None)
    }

    /// Files under `dir` (which must exist) may be read.
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        let dir = dir.canonicalize()?;
        if !dir.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                format!("{} is not a folder", dir.display()),
            ));
        }
        Ok(Self(Some(dir)))
    }

    /// The folder, when there is one.
    pub fn dir(&self) -> Option<&Path> {
        self.0.as_deref()
    }

    /// Refuses `url` when it names a file outside the folder (after following links and
    /// `..`), or any file when there is no folder.
    pub fn check(&self, url: &SutUrl) -> Result<(), FilesError> {
        for (key, path) in url.files() {
            let Some(dir) = &self.0 else {
                return Err(FilesError::NoDir { key, path });
            };
            let real = Path::new(&path)
                .canonicalize()
                .map_err(|e| FilesError::Missing {
                    key: key.clone(),
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            if !real.starts_with(dir) {
                return Err(FilesError::Outside {
                    key,
                    path,
                    dir: dir.display().to_string(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn url(q: &str) -> SutUrl {
        SutUrl::parse(&format!("mqtts://localhost:8883/t?{q}")).unwrap()
    }

    #[test]
    fn files_are_read_only_under_the_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let inside = root.join("in");
        std::fs::create_dir_all(&inside).unwrap();
        std::fs::write(inside.join("ca.pem"), "x").unwrap();
        std::fs::write(root.join("secret"), "x").unwrap();
        std::os::unix::fs::symlink(root.join("secret"), inside.join("link")).unwrap();
        let dir = FilesDir::new(&inside).unwrap();
        let ok = format!("ca={}", inside.join("ca.pem").display());
        assert_eq!(dir.check(&url(&ok)), Ok(()));
        assert!(dir.check(&url("")).is_ok());
        for bad in [
            format!("ca={}", root.join("secret").display()),
            format!("ca={}/../secret", inside.display()),
            format!("ca={}", inside.join("link").display()),
            "ca=/etc/passwd".to_owned(),
        ] {
            let e = dir.check(&url(&bad)).unwrap_err();
            assert!(matches!(e, FilesError::Outside { .. }), "{bad}: {e}");
        }
        let e = dir
            .check(&url(&format!("ca={}", inside.join("nope").display())))
            .unwrap_err();
        assert!(matches!(e, FilesError::Missing { .. }), "{e}");
        let e = FilesDir::none().check(&url(&ok)).unwrap_err();
        assert!(e.to_string().contains("--files-dir"), "{e}");
    }
}
