//! The request log (`lnrs_request_log`): the first response to every mutation that carried an
//! AIP-155 `request_id`, keyed by (principal, request id), written in the same transaction as
//! the mutation so a retry replays exactly what was committed. Pruned by age and count.

use duckdb::{params, OptionalExt};

use super::{Connection, StorageError};
use crate::domain::tables::REQUEST_LOG_TABLE;

/// A recorded request: which RPC it was, the fingerprint of its canonical form, and the
/// response (JSON) to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub rpc: String,
    pub fingerprint: String,
    pub response: String,
}

/// The identity of one request: who sent it and its id.
#[derive(Debug, Clone, Copy)]
pub struct RequestKey<'a> {
    /// The calling principal ("" when auth is off).
    pub principal: &'a str,
    pub request_id: &'a str,
}

/// The recorded request with this key, if any.
pub fn find(conn: &Connection, key: RequestKey<'_>) -> Result<Option<Recorded>, StorageError> {
    let sql = format!(
        "SELECT rpc, fingerprint, response FROM {REQUEST_LOG_TABLE}
         WHERE principal = ? AND request_id = ?"
    );
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(params![key.principal, key.request_id], |r| {
            Ok(Recorded {
                rpc: r.get(0)?,
                fingerprint: r.get(1)?,
                response: r.get(2)?,
            })
        })
        .optional()?)
}

/// Records a request (inside the caller's transaction).
pub fn record(
    conn: &Connection,
    key: RequestKey<'_>,
    request: &Recorded,
    time_us: i64,
) -> Result<(), StorageError> {
    let sql = format!(
        "INSERT INTO {REQUEST_LOG_TABLE} (principal, request_id, rpc, fingerprint, time_us, response)
         VALUES (?, ?, ?, ?, ?, ?)"
    );
    conn.prepare_cached(&sql)?.execute(params![
        key.principal,
        key.request_id,
        request.rpc,
        request.fingerprint,
        time_us,
        request.response
    ])?;
    Ok(())
}

/// Entries in the log.
pub fn count(conn: &Connection) -> Result<u64, StorageError> {
    let n: i64 = conn.query_row(
        &format!("SELECT count(*) FROM {REQUEST_LOG_TABLE}"),
        [],
        |r| r.get(0),
    )?;
    Ok(n as u64)
}

/// Removes entries recorded before `min_time_us`, then the oldest beyond `keep_last`.
/// Returns how many went.
pub fn prune(conn: &Connection, min_time_us: i64, keep_last: u64) -> Result<u64, StorageError> {
    let old = conn.execute(
        &format!("DELETE FROM {REQUEST_LOG_TABLE} WHERE time_us < ?"),
        [min_time_us],
    )?;
    let excess = conn.execute(
        &format!(
            "DELETE FROM {REQUEST_LOG_TABLE} WHERE (principal, request_id) IN (
                 SELECT principal, request_id FROM {REQUEST_LOG_TABLE}
                 ORDER BY time_us DESC, principal, request_id OFFSET ?)"
        ),
        [keep_last as i64],
    )?;
    Ok((old + excess) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::storage::open(&dir.path().join("r.duckdb")).unwrap();
        crate::storage::schema::migrate(&conn).unwrap();
        (dir, conn)
    }

    fn rec(rpc: &str) -> Recorded {
        Recorded {
            rpc: rpc.into(),
            fingerprint: "f".into(),
            response: "{}".into(),
        }
    }

    #[test]
    fn ids_are_scoped_by_principal() {
        let (_d, c) = db();
        let k = |p| RequestKey {
            principal: p,
            request_id: "x",
        };
        record(&c, k("alice"), &rec("/a"), 1).unwrap();
        record(&c, k("bob"), &rec("/b"), 2).unwrap();
        assert_eq!(find(&c, k("alice")).unwrap().unwrap().rpc, "/a");
        assert_eq!(find(&c, k("bob")).unwrap().unwrap().rpc, "/b");
        assert_eq!(find(&c, k("")).unwrap(), None);
        assert!(
            record(&c, k("alice"), &rec("/a"), 3).is_err(),
            "key is unique"
        );
    }

    #[test]
    fn prune_by_age_then_count_keeps_the_newest() {
        let (_d, c) = db();
        for i in 0..10 {
            let id = format!("r{i}");
            let key = RequestKey {
                principal: "",
                request_id: &id,
            };
            record(&c, key, &rec("/x"), i).unwrap();
        }
        assert_eq!(prune(&c, 3, 100).unwrap(), 3);
        assert_eq!(prune(&c, 0, 4).unwrap(), 3);
        assert_eq!(count(&c).unwrap(), 4);
        let newest = RequestKey {
            principal: "",
            request_id: "r9",
        };
        assert!(find(&c, newest).unwrap().is_some());
    }
}
