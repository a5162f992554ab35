//! What an uploaded file is, from its first bytes: a DuckDB database (and whether this engine
//! reads its storage version), a ZIP archive, or something else. Decided before the file is
//! opened, so an unreadable engine version is a clear error rather than an engine failure.

use std::io::Read;
use std::path::Path;

use super::DataIoError;
use crate::snapshot::manifest::parse_storage_version;

/// The oldest storage version this engine reads: DuckDB 0.10 and every 1.x release write 64
/// (1.x may also record a newer `storage_compatibility`, read the same way).
pub const OLDEST_READABLE_STORAGE: u64 = 64;

/// An upload's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    DuckDb { storage_version: u64 },
    Zip,
}

/// What a DuckDB storage version means, for reports ("64 (DuckDB 0.10 – 1.x)").
pub fn describe_storage(v: u64) -> String {
    match v {
        64 => "DuckDB storage version 64 (v0.10 to v1.x)".into(),
        v if v > 64 => format!("DuckDB storage version {v}"),
        v => format!("DuckDB storage version {v} (before v0.10)"),
    }
}

/// Detects the kind of the file at `path`; `readable` is the newest storage version the
/// running engine reads.
pub fn detect(path: &Path, readable: u64) -> Result<FileKind, DataIoError> {
    let mut head = Vec::with_capacity(12 * 1024);
    std::fs::File::open(path)?
        .take(12 * 1024)
        .read_to_end(&mut head)?;
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return Ok(FileKind::Zip);
    }
    if head.get(8..12) == Some(b"DUCK") {
        let v = parse_storage_version(&head).map_err(|_| {
            DataIoError::UnsupportedFileType("a DuckDB file with a damaged header".into())
        })?;
        if !(OLDEST_READABLE_STORAGE..=readable).contains(&v) {
            return Err(DataIoError::UnsupportedEngineVersion(format!(
                "{}; this server reads storage versions {OLDEST_READABLE_STORAGE} to {readable}",
                describe_storage(v)
            )));
        }
        return Ok(FileKind::DuckDb { storage_version: v });
    }
    Err(DataIoError::UnsupportedFileType(
        "neither a DuckDB database nor a ZIP archive of CSV files".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(bytes: &[u8]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), bytes).unwrap();
        f
    }

    #[test]
    fn kinds_and_versions() {
        let mut duck = vec![0u8; 12 * 1024];
        duck[8..12].copy_from_slice(b"DUCK");
        duck[12..20].copy_from_slice(&64u64.to_le_bytes());
        assert_eq!(
            detect(file(&duck).path(), 65).unwrap(),
            FileKind::DuckDb {
                storage_version: 64
            }
        );
        duck[12..20].copy_from_slice(&39u64.to_le_bytes());
        assert!(matches!(
            detect(file(&duck).path(), 65),
            Err(DataIoError::UnsupportedEngineVersion(_))
        ));
        assert_eq!(
            detect(file(b"PK\x03\x04rest").path(), 65).unwrap(),
            FileKind::Zip
        );
        assert!(matches!(
            detect(file(b"%PDF-1.7").path(), 65),
            Err(DataIoError::UnsupportedFileType(_))
        ));
    }
}
