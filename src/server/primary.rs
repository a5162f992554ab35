//! A follower of the primary itself (`--follow http://primary:50051`, no replica): on an empty
//! data directory it downloads the primary's newest snapshot (ExportSnapshot) and builds its
//! database from it; while serving, it tails the primary's WatchEvents with log records and
//! applies them in order (a restore's snapshot fetched the same way), reconnecting with
//! backoff and resuming after its own head — so a primary restart or a network cut costs
//! staleness, never a gap.

use std::time::Duration;

use tokio_stream::StreamExt;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::Request;

use crate::app::App;
use crate::config::{Config, FollowConfig};
use crate::error::Error;
use crate::pb;

/// Events applied per writer job at most while catching up.
const BATCH: usize = 512;
/// Heartbeats asked of the primary: they carry its head, which bounds staleness when idle.
const HEARTBEAT: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a new follower waits for its primary to answer before giving up its start.
const BOOTSTRAP_PATIENCE: Duration = Duration::from_secs(60);

fn unreachable(what: &str, e: impl std::fmt::Display) -> Error {
    Error::DatabaseUnavailable(format!("the primary {what}: {e}"))
}

fn channel(f: &FollowConfig) -> Result<Channel, Error> {
    Ok(Endpoint::from_shared(f.url.clone())
        .map_err(|e| unreachable("address is invalid", e))?
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy())
}

fn request<T>(f: &FollowConfig, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    if let Some(t) = &f.token {
        if let Ok(v) = MetadataValue::try_from(format!("Bearer {}", &**t)) {
            r.metadata_mut().insert("authorization", v);
        }
    }
    r
}

/// Downloads snapshot `id` ("" = the newest of the primary's history) into `sink`, checking
/// the file's BLAKE3 against the one the primary sends last.
async fn download(
    f: &FollowConfig,
    id: &str,
    mut sink: impl FnMut(&[u8]) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut client = pb::snapshot_service_client::SnapshotServiceClient::new(channel(f)?)
        .max_decoding_message_size(8 << 20);
    let req = pb::ExportSnapshotRequest {
        snapshot_id: id.to_string(),
    };
    let mut stream = client
        .export_snapshot(request(f, req))
        .await
        .map_err(|s| unreachable("did not send its snapshot", s.message()))?
        .into_inner();
    let mut hasher = blake3::Hasher::new();
    let mut expected = String::new();
    while let Some(m) = stream.next().await {
        let m = m.map_err(|s| unreachable("broke off its snapshot", s.message()))?;
        hasher.update(&m.data);
        sink(&m.data)?;
        if !m.file_blake3.is_empty() {
            expected = m.file_blake3;
        }
    }
    if expected != hasher.finalize().to_hex().as_str() {
        return Err(unreachable("snapshot", "arrived incomplete or damaged"));
    }
    Ok(())
}

/// Downloads the primary's newest snapshot into the file at `dest`.
async fn download_file(f: &FollowConfig, dest: &std::path::Path) -> Result<(), Error> {
    use std::io::Write;
    let io = |e: std::io::Error| Error::Internal(format!("follower download: {e}"));
    let mut out = std::io::BufWriter::new(std::fs::File::create(dest).map_err(io)?);
    download(f, "", |d| out.write_all(d).map_err(io)).await?;
    out.flush().map_err(io)?;
    out.get_ref().sync_all().map_err(io)
}

/// Builds a new follower's database from its primary's newest snapshot, retrying while the
/// primary is not reachable yet (pods start in any order). A no-op when the database exists.
pub async fn bootstrap(config: &Config) -> Result<(), Error> {
    let Some(f) = config.follow.as_ref().filter(|f| f.tails_primary()) else {
        return Ok(());
    };
    if config.database_path().exists() {
        return Ok(());
    }
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| Error::Internal(format!("data directory: {e}")))?;
    let file = config.data_dir.join("bootstrap.lnrs-snapshot.partial");
    let started = tokio::time::Instant::now();
    let mut backoff = Duration::from_millis(200);
    loop {
        match download_file(f, &file).await {
            Ok(()) => break,
            Err(e) if started.elapsed() < BOOTSTRAP_PATIENCE => {
                tracing::warn!(error = %e, "follower bootstrap: retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(e) => {
                let _ = std::fs::remove_file(&file);
                return Err(e);
            }
        }
    }
    let (cfg, path) = (config.clone(), file.clone());
    let built = tokio::task::spawn_blocking(move || {
        crate::app::follower::bootstrap_from_archive(&cfg, &path)
    })
    .await
    .map_err(|e| Error::Internal(format!("bootstrap task: {e}")));
    let _ = std::fs::remove_file(&file);
    let head = built??;
    tracing::info!(head, primary = %f.url, "follower bootstrapped from the primary's snapshot");
    Ok(())
}

/// Tails the primary until aborted.
pub async fn tail(app: App) {
    let Some(f) = app.config().follow.clone().filter(|f| f.tails_primary()) else {
        return;
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        match tail_once(&app, &f).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => {
                app.note_primary(Err(e.public_message()));
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        tokio::time::sleep(backoff).await;
    }
}

/// One subscription: from the local head until the stream ends or fails.
async fn tail_once(app: &App, f: &FollowConfig) -> Result<(), Error> {
    let mut client = pb::event_service_client::EventServiceClient::new(channel(f)?)
        .max_decoding_message_size(64 << 20);
    let req = pb::WatchEventsRequest {
        start_after_seq: Some(app.event_head()),
        include_log_record: true,
        heartbeat_interval: Some(prost_types::Duration {
            seconds: HEARTBEAT.as_secs() as i64,
            nanos: 0,
        }),
        ..Default::default()
    };
    let mut stream = client
        .watch_events(request(f, req))
        .await
        .map_err(|s| unreachable("refused the subscription", s.message()))?
        .into_inner();
    let mut batch: Vec<Vec<u8>> = Vec::new();
    let mut primary_head = 0;
    loop {
        // Whatever is already buffered joins the batch; the batch is applied before waiting.
        let next = if batch.is_empty() || batch.len() >= BATCH {
            if !batch.is_empty() {
                apply(app, f, &mut batch, primary_head).await?;
            }
            stream.message().await
        } else {
            match tokio::time::timeout(Duration::ZERO, stream.message()).await {
                Ok(m) => m,
                Err(_) => {
                    apply(app, f, &mut batch, primary_head).await?;
                    continue;
                }
            }
        };
        let msg = match next {
            Ok(Some(m)) => m,
            Ok(None) => {
                apply(app, f, &mut batch, primary_head).await?;
                return Ok(());
            }
            Err(s) => {
                apply(app, f, &mut batch, primary_head).await?;
                return Err(unreachable("stream broke", s.message()));
            }
        };
        use pb::watch_events_response::Item;
        match msg.item {
            Some(Item::Event(e)) => {
                primary_head = primary_head.max(e.seq);
                batch.push(e.log_record);
            }
            Some(Item::Heartbeat(h)) => {
                primary_head = primary_head.max(h.head_seq);
                apply(app, f, &mut batch, primary_head).await?;
            }
            Some(Item::CaughtUp(c)) => {
                primary_head = primary_head.max(c.head_seq);
                apply(app, f, &mut batch, primary_head).await?;
            }
            Some(Item::CloudEvent(_)) => {
                apply(app, f, &mut batch, primary_head).await?;
                return Err(unreachable(
                    "stream",
                    "sent CloudEvents to a native subscription",
                ));
            }
            None => {}
        }
    }
}

/// Applies the batch (fetching any snapshot a restore in it needs) and records progress.
async fn apply(
    app: &App,
    f: &FollowConfig,
    batch: &mut Vec<Vec<u8>>,
    primary_head: u64,
) -> Result<(), Error> {
    let records = std::mem::take(batch);
    let fetch = |id: String| async move {
        let mut upload = app.begin_upload("follow-snapshot", None)?;
        download(f, &id, |d| Ok(upload.write(d)?)).await?;
        Ok(upload.finish()?)
    };
    app.apply_primary_records(&records, fetch).await?;
    app.note_primary(Ok(primary_head));
    Ok(())
}
