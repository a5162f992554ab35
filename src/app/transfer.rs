//! Files through the API: uploads staged in the snapshot store's scratch space (bounded by
//! `import_max_bytes`, removed when dropped: a cancelled upload leaves nothing), and snapshot
//! archives — save one snapshot as a portable file, load one (deep-verified before it enters
//! the catalog).

use super::snapshots::{blocking, snapshot_event};
use super::{App, RequestCtx};
use crate::dataio::{StagedFile, Upload};
use crate::error::Error;
use crate::events::EventKind;
use crate::snapshot::archive::{self, Loaded, Written};
use crate::snapshot::{SnapshotError, SnapshotId};

impl App {
    /// Starts an upload of at most `import_max_bytes`; `declared` is the client's total.
    pub fn begin_upload(&self, what: &str, declared: Option<u64>) -> Result<Upload, Error> {
        let path = self.shared.store()?.scratch_path(what);
        Ok(Upload::create(
            path,
            self.shared.config.import_max_bytes,
            declared,
        )?)
    }

    /// The snapshot an export of "the newest" means: the newest of this server's own history
    /// (an IMPORT snapshot or one loaded from elsewhere is not a state of its log).
    pub fn newest_own_snapshot(&self) -> Result<SnapshotId, Error> {
        let store = self.shared.store()?;
        Ok(store
            .newest_at_or_before(u64::MAX)
            .ok_or_else(|| SnapshotError::NotFound("(none yet)".into()))?
            .id)
    }

    /// Writes snapshot `id` (None: [`Self::newest_own_snapshot`]) as an archive in scratch.
    pub async fn save_snapshot(&self, id: Option<&str>) -> Result<(StagedFile, Written), Error> {
        let id = match id.filter(|s| !s.is_empty()) {
            Some(s) => SnapshotId::parse(s)?,
            None => match self.newest_own_snapshot() {
                Ok(id) => id,
                // A server that never took one (no delete yet, no replica): take one now, so
                // a new follower of this primary has a base.
                Err(Error::Snapshot(SnapshotError::NotFound(_))) => {
                    let ctx = RequestCtx::internal("export-snapshot");
                    let made = self
                        .create_snapshot(ctx, "Base for an export".into(), Default::default())
                        .await?;
                    SnapshotId::parse(&made.value.snapshot_id)?
                }
                Err(e) => return Err(e),
            },
        };
        let store = self.shared.store()?;
        blocking(move || {
            let _pin = store.pin(&id);
            let file = StagedFile::adopt(store.scratch_path(&format!("save-{id}.lnrs-snapshot")));
            let written = archive::write(&store, &id, file.path())?;
            Ok((file, written))
        })
        .await
    }

    /// Loads an archive: checked, deep-verified in a scratch store, then added to the catalog
    /// (and announced with a SNAPSHOT_CREATED event when it is new here).
    pub async fn load_snapshot(&self, ctx: RequestCtx, file: StagedFile) -> Result<Loaded, Error> {
        let store = self.shared.store()?;
        let loaded = blocking(move || {
            let scratch = store.scratch_path("load-verify");
            Ok(archive::load(&store, file.path(), &scratch)?)
        })
        .await?;
        if !loaded.already_present {
            let m = loaded.manifest.clone();
            let c = ctx.clone();
            self.write(&ctx, move |st| {
                st.append_events(&c, vec![snapshot_event(EventKind::SnapshotCreated, &m)])
            })
            .await?;
        }
        Ok(loaded)
    }
}
