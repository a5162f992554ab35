//! An upload (ImportDatabase, ImportSnapshot) written to a scratch file as it arrives: refused
//! as soon as it passes its limit or its declared size, checked for truncation at the end, and
//! removed when dropped — a cancelled or failed upload leaves no staging file behind.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::DataIoError;

/// An upload in progress.
pub struct Upload {
    staged: StagedFile,
    out: BufWriter<File>,
    limit: u64,
    declared: Option<u64>,
    written: u64,
}

/// A finished upload (or any scratch file this layer hands out): removed on drop.
#[derive(Debug)]
pub struct StagedFile {
    path: PathBuf,
}

impl StagedFile {
    /// Takes ownership of `path`: it is removed when the value drops.
    pub fn adopt(path: PathBuf) -> StagedFile {
        StagedFile { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        // A DuckDB file opened on a staged path may leave WAL side files next to it.
        let _ = crate::storage::files::remove_database(&self.path);
    }
}

impl Upload {
    /// Starts an upload into `path` (a fresh scratch path). `declared` is the size the client
    /// announced: larger than `limit` is refused before anything is written.
    pub fn create(path: PathBuf, limit: u64, declared: Option<u64>) -> Result<Upload, DataIoError> {
        if declared.is_some_and(|d| d > limit) {
            return Err(DataIoError::UploadTooLarge { limit });
        }
        let file = File::create(&path)?;
        Ok(Upload {
            staged: StagedFile { path },
            out: BufWriter::with_capacity(1 << 20, file),
            limit,
            declared,
            written: 0,
        })
    }

    /// Appends the next bytes.
    pub fn write(&mut self, data: &[u8]) -> Result<(), DataIoError> {
        let next = self.written + data.len() as u64;
        if next > self.limit {
            return Err(DataIoError::UploadTooLarge { limit: self.limit });
        }
        if let Some(d) = self.declared.filter(|d| next > *d) {
            return Err(DataIoError::UploadTruncated {
                expected: d,
                got: next,
            });
        }
        self.out.write_all(data)?;
        self.written = next;
        Ok(())
    }

    /// Bytes received so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Ends the upload: every declared byte must have arrived. The file is flushed to disk.
    pub fn finish(self) -> Result<StagedFile, DataIoError> {
        if let Some(d) = self.declared.filter(|d| *d != self.written) {
            return Err(DataIoError::UploadTruncated {
                expected: d,
                got: self.written,
            });
        }
        let Upload { staged, out, .. } = self;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(staged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_truncation_and_cleanup() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("u");
        assert!(matches!(
            Upload::create(p.clone(), 10, Some(11)),
            Err(DataIoError::UploadTooLarge { limit: 10 })
        ));
        let mut u = Upload::create(p.clone(), 10, None).unwrap();
        u.write(b"12345").unwrap();
        assert!(matches!(
            u.write(b"123456"),
            Err(DataIoError::UploadTooLarge { .. })
        ));
        drop(u);
        assert!(!p.exists(), "a failed upload leaves nothing");
        let mut u = Upload::create(p.clone(), 10, Some(8)).unwrap();
        u.write(b"1234").unwrap();
        assert!(matches!(
            u.finish(),
            Err(DataIoError::UploadTruncated {
                expected: 8,
                got: 4
            })
        ));
        assert!(!p.exists());
        let mut u = Upload::create(p.clone(), 10, Some(4)).unwrap();
        u.write(b"1234").unwrap();
        let staged = u.finish().unwrap();
        assert_eq!(std::fs::read(staged.path()).unwrap(), b"1234");
        drop(staged);
        assert!(!p.exists());
    }
}
