//! The object store a replica lives in, behind one small interface: create-only puts (a block,
//! a manifest or a segment is written once and never replaced), overwrites for the few mutable
//! records, a compare-and-swap for the lease, and reads, listings and deletes — all relative to
//! the URL's prefix.
//!
//! Backends come from the `object_store` crate by URL scheme: `s3://bucket/prefix` (endpoint,
//! region and credentials from the standard `AWS_*` variables, or `replica_endpoint` for
//! S3-compatible servers), `gs://bucket/prefix`, `az://container/prefix`, and `file:///dir`.
//! Requests time out and retry a little; the uploader retries whole steps with backoff, so a
//! dead store costs seconds, not minutes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path as ObjPath;
use object_store::{
    ClientOptions, ObjectStore, PutMode, PutOptions, PutPayload, RetryConfig, UpdateVersion,
};

use super::ReplicaError;

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// What a create-only put found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Created,
    /// The object was there already (content-addressed or idempotent: the same bytes).
    Existed,
}

/// One object of a listing, its name relative to the prefix.
#[derive(Debug, Clone)]
pub struct Listed {
    pub name: String,
    pub size: u64,
    pub last_modified: DateTime<Utc>,
}

/// An object and the version tag a conditional write must name to replace it.
#[derive(Debug, Clone)]
pub struct Versioned {
    pub bytes: Bytes,
    pub e_tag: Option<String>,
}

/// The replica's object store and prefix.
#[derive(Clone)]
pub struct Remote {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// The URL without credentials, for status and logs.
    shown: String,
    /// For `file://`: the directory (its conditional writes take a file lock; object_store's
    /// local backend has no compare-and-swap).
    local: Option<PathBuf>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("url", &self.shown).finish()
    }
}

impl Remote {
    /// Opens the store `url` names. `endpoint` overrides the S3 endpoint (S3-compatible
    /// servers); plain `http://` endpoints are allowed when given explicitly.
    pub fn open(url: &str, endpoint: Option<&str>) -> Result<Remote, ReplicaError> {
        let parsed = url::Url::parse(url)
            .map_err(|e| ReplicaError::Config(format!("replica_url is not a URL: {e}")))?;
        let bad = |e: object_store::Error| ReplicaError::Config(format!("replica_url: {e}"));
        let prefix = parsed.path().trim_matches('/').to_string();
        let shown = format!(
            "{}://{}/{}",
            parsed.scheme(),
            parsed.host_str().unwrap_or(""),
            prefix
        );
        let (store, prefix, local): (Arc<dyn ObjectStore>, String, Option<PathBuf>) = match parsed
            .scheme()
        {
            "s3" | "s3a" => {
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url)
                    .with_client_options(client_options())
                    .with_retry(retry());
                if let Some(e) = endpoint {
                    b = b.with_endpoint(e).with_allow_http(e.starts_with("http://"));
                }
                (Arc::new(b.build().map_err(bad)?), prefix, None)
            }
            "gs" => {
                let b = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(url)
                    .with_client_options(client_options())
                    .with_retry(retry());
                (Arc::new(b.build().map_err(bad)?), prefix, None)
            }
            "az" | "azure" | "abfs" | "abfss" => {
                let b = object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(url)
                    .with_client_options(client_options())
                    .with_retry(retry());
                (Arc::new(b.build().map_err(bad)?), prefix, None)
            }
            "file" => {
                let dir = parsed
                    .to_file_path()
                    .map_err(|()| ReplicaError::Config("replica_url: not a local path".into()))?;
                std::fs::create_dir_all(&dir).map_err(|e| {
                    ReplicaError::Config(format!("replica_url: cannot create the directory: {e}"))
                })?;
                let fs =
                    object_store::local::LocalFileSystem::new_with_prefix(&dir).map_err(bad)?;
                (Arc::new(fs), String::new(), Some(dir))
            }
            other => {
                return Err(ReplicaError::Config(format!(
                    "replica_url scheme `{other}` is not supported (s3, gs, az, file)"
                )))
            }
        };
        Ok(Remote {
            store,
            prefix,
            shown,
            local,
        })
    }

    /// The URL, without credentials.
    pub fn url(&self) -> &str {
        &self.shown
    }

    fn key(&self, name: &str) -> ObjPath {
        if self.prefix.is_empty() {
            ObjPath::from(name)
        } else {
            ObjPath::from(format!("{}/{name}", self.prefix))
        }
    }

    fn name_of(&self, p: &ObjPath) -> String {
        let s = p.as_ref();
        match self.prefix.is_empty() {
            true => s.to_string(),
            false => s
                .strip_prefix(&self.prefix)
                .map_or(s, |r| r.trim_start_matches('/'))
                .to_string(),
        }
    }

    /// Writes `name` only if it does not exist yet.
    pub async fn put_create(&self, name: &str, bytes: Bytes) -> Result<Put, ReplicaError> {
        let opts = PutOptions::from(PutMode::Create);
        match self
            .store
            .put_opts(&self.key(name), PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => Ok(Put::Created),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(Put::Existed),
            Err(e) => Err(unreachable(e)),
        }
    }

    /// Writes `name`, replacing it (the mutable records only).
    pub async fn put_overwrite(&self, name: &str, bytes: Bytes) -> Result<(), ReplicaError> {
        self.store
            .put(&self.key(name), PutPayload::from(bytes))
            .await
            .map(drop)
            .map_err(unreachable)
    }

    /// Compare-and-swap: creates `name` when `expected` is `None`, else replaces it only if its
    /// version tag is still `expected`. `Ok(None)`: someone else changed it first.
    pub async fn put_if(
        &self,
        name: &str,
        bytes: Bytes,
        expected: Option<&str>,
    ) -> Result<Option<String>, ReplicaError> {
        if let Some(dir) = &self.local {
            return self.put_if_local(dir, name, bytes, expected).await;
        }
        let mode = match expected {
            None => PutMode::Create,
            Some(tag) => PutMode::Update(UpdateVersion {
                e_tag: Some(tag.to_string()),
                version: None,
            }),
        };
        match self
            .store
            .put_opts(&self.key(name), PutPayload::from(bytes), mode.into())
            .await
        {
            Ok(r) => Ok(Some(r.e_tag.unwrap_or_default())),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(None),
            Err(e) => Err(unreachable(e)),
        }
    }

    /// The local backend's compare-and-swap: under an exclusive lock on a side file, compare
    /// the current version tag and write.
    async fn put_if_local(
        &self,
        dir: &std::path::Path,
        name: &str,
        bytes: Bytes,
        expected: Option<&str>,
    ) -> Result<Option<String>, ReplicaError> {
        let lock_path = dir.join(format!("{name}.lock"));
        let lock = tokio::task::spawn_blocking(move || lock_file(&lock_path))
            .await
            .map_err(|e| ReplicaError::Unreachable(e.to_string()))??;
        let current = self.get(name).await?.map(|v| v.e_tag.unwrap_or_default());
        let result = match (current.as_deref(), expected) {
            (None, None) => self
                .put_create(name, bytes)
                .await
                .map(|p| p == Put::Created),
            (Some(cur), Some(exp)) if cur == exp => {
                self.put_overwrite(name, bytes).await.map(|()| true)
            }
            _ => Ok(false),
        };
        let written = result?;
        let tag = match written {
            true => self.get(name).await?.and_then(|v| v.e_tag),
            false => None,
        };
        drop(lock);
        Ok(written.then(|| tag.unwrap_or_default()))
    }

    /// Reads `name`; `None` when it does not exist.
    pub async fn get(&self, name: &str) -> Result<Option<Versioned>, ReplicaError> {
        match self.store.get(&self.key(name)).await {
            Ok(r) => {
                let e_tag = r.meta.e_tag.clone();
                let bytes = r.bytes().await.map_err(unreachable)?;
                Ok(Some(Versioned { bytes, e_tag }))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(unreachable(e)),
        }
    }

    /// Reads `name`, which must exist.
    pub async fn get_bytes(&self, name: &str) -> Result<Bytes, ReplicaError> {
        self.get(name)
            .await?
            .map(|v| v.bytes)
            .ok_or_else(|| ReplicaError::NotFound(name.to_string()))
    }

    /// The size of `name`, `None` when it does not exist.
    pub async fn head(&self, name: &str) -> Result<Option<u64>, ReplicaError> {
        match self.store.head(&self.key(name)).await {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(unreachable(e)),
        }
    }

    /// Every object under `dir` (recursively), names relative to the prefix.
    pub async fn list(&self, dir: &str) -> Result<Vec<Listed>, ReplicaError> {
        let key = self.key(dir);
        let metas: Vec<_> = self
            .store
            .list(Some(&key))
            .try_collect()
            .await
            .map_err(unreachable)?;
        Ok(metas
            .into_iter()
            .map(|m| Listed {
                name: self.name_of(&m.location),
                size: m.size,
                last_modified: m.last_modified,
            })
            .collect())
    }

    /// Deletes `name` (absent is fine).
    pub async fn delete(&self, name: &str) -> Result<(), ReplicaError> {
        match self.store.delete(&self.key(name)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(unreachable(e)),
        }
    }
}

fn client_options() -> ClientOptions {
    ClientOptions::new()
        .with_timeout(REQUEST_TIMEOUT)
        .with_connect_timeout(CONNECT_TIMEOUT)
}

fn retry() -> RetryConfig {
    RetryConfig {
        max_retries: 2,
        retry_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

fn unreachable(e: object_store::Error) -> ReplicaError {
    ReplicaError::Unreachable(e.to_string())
}

/// An exclusive lock on `path` (created), released when the file closes.
fn lock_file(path: &std::path::Path) -> Result<std::fs::File, ReplicaError> {
    use std::os::fd::AsRawFd;
    let io = |e: std::io::Error| ReplicaError::Unreachable(format!("lease lock: {e}"));
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io)?;
    // SAFETY: flock on a descriptor this function owns; no memory is involved.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    if rc != 0 {
        return Err(io(std::io::Error::last_os_error()));
    }
    Ok(f)
}
