//! Fencing: one writer per prefix. `lease.json` names the holder (a node id kept in the data
//! directory, so a restarted server is the same holder), a generation that grows with every
//! change of holder, and when it was last renewed. Every change is a conditional write on the
//! object's version tag, so of two servers racing only one wins; the loser reads who holds it
//! and stays fenced until the holder stops renewing for a whole `ttl`.
//!
//! A holder renews every `ttl / 3` and ships nothing once `ttl / 2` has passed since its last
//! confirmed renewal: by the time a lease can be taken over (a full `ttl` without renewal), the
//! old holder has stopped writing — never two writers interleaving.

use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::layout::LEASE;
use super::remote::Remote;
use super::ReplicaError;

const FORMAT: u32 = 1;

/// The lease record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub format: u32,
    pub generation: u64,
    /// The holder's node id.
    pub holder: String,
    pub host: String,
    pub pid: u32,
    pub renewed_at: DateTime<Utc>,
    pub ttl_ms: u64,
}

impl Lease {
    fn expired(&self, now: DateTime<Utc>) -> bool {
        now > self.renewed_at + chrono::Duration::milliseconds(self.ttl_ms as i64)
    }
}

/// A lease this process holds.
#[derive(Debug, Clone)]
pub struct Held {
    pub lease: Lease,
    e_tag: String,
    confirmed: Instant,
}

impl Held {
    /// Whether writing is still safe: within half a ttl of the last confirmed renewal.
    pub fn valid(&self) -> bool {
        self.confirmed.elapsed() < self.ttl() / 2
    }

    /// Whether it is time to renew.
    pub fn due(&self) -> bool {
        self.confirmed.elapsed() >= self.ttl() / 3
    }

    fn ttl(&self) -> Duration {
        Duration::from_millis(self.lease.ttl_ms)
    }
}

/// Someone else's lease.
#[derive(Debug, Clone)]
pub struct Taken {
    pub holder: String,
    pub host: String,
    pub generation: u64,
    pub expires_at: DateTime<Utc>,
}

impl Taken {
    pub fn error(&self) -> ReplicaError {
        ReplicaError::Fenced {
            holder: format!("node {} on {}", self.holder, self.host),
            generation: self.generation,
        }
    }
}

fn record(generation: u64, node: &str, ttl: Duration) -> Lease {
    Lease {
        format: FORMAT,
        generation,
        holder: node.to_string(),
        host: hostname(),
        pid: std::process::id(),
        renewed_at: Utc::now(),
        ttl_ms: ttl.as_millis() as u64,
    }
}

fn encode(l: &Lease) -> Bytes {
    Bytes::from(serde_json::to_vec(l).unwrap_or_default())
}

/// Takes the lease for `node`: when there is none, when `node` holds it already (a restart),
/// or when it expired. Otherwise says who holds it.
pub async fn acquire(
    remote: &Remote,
    node: &str,
    ttl: Duration,
) -> Result<Result<Held, Taken>, ReplicaError> {
    let current = remote.get(LEASE).await?;
    let (generation, expected) = match &current {
        None => (1, None),
        Some(v) => {
            let l: Lease = serde_json::from_slice(&v.bytes)
                .map_err(|e| ReplicaError::corrupt(LEASE, e.to_string()))?;
            if l.holder != node && !l.expired(Utc::now()) {
                return Ok(Err(taken(&l)));
            }
            (l.generation + 1, Some(v.e_tag.clone().unwrap_or_default()))
        }
    };
    let lease = record(generation, node, ttl);
    match remote
        .put_if(LEASE, encode(&lease), expected.as_deref())
        .await?
    {
        Some(e_tag) => Ok(Ok(Held {
            lease,
            e_tag,
            confirmed: Instant::now(),
        })),
        // Someone changed it between our read and write: read who.
        None => Box::pin(acquire(remote, node, ttl)).await,
    }
}

/// Renews a held lease. `Ok(Err(_))`: it was taken over (this server is fenced now).
pub async fn renew(remote: &Remote, held: &mut Held) -> Result<Result<(), Taken>, ReplicaError> {
    let started = Instant::now();
    let mut next = held.lease.clone();
    next.renewed_at = Utc::now();
    match remote
        .put_if(LEASE, encode(&next), Some(&held.e_tag))
        .await?
    {
        Some(e_tag) => {
            held.lease = next;
            held.e_tag = e_tag;
            held.confirmed = started;
            Ok(Ok(()))
        }
        None => {
            let v = remote.get(LEASE).await?;
            let l = v
                .map(|v| serde_json::from_slice::<Lease>(&v.bytes))
                .transpose()
                .map_err(|e| ReplicaError::corrupt(LEASE, e.to_string()))?;
            match l {
                Some(l) => Ok(Err(taken(&l))),
                None => Ok(Err(Taken {
                    holder: "nobody (the lease was deleted)".into(),
                    host: String::new(),
                    generation: held.lease.generation,
                    expires_at: Utc::now(),
                })),
            }
        }
    }
}

/// Gives the lease up on a clean shutdown, so a successor need not wait out the ttl.
pub async fn release(remote: &Remote, held: &Held) -> Result<(), ReplicaError> {
    let mut last = held.lease.clone();
    last.renewed_at = DateTime::<Utc>::UNIX_EPOCH;
    remote
        .put_if(LEASE, encode(&last), Some(&held.e_tag))
        .await
        .map(drop)
}

/// The current lease, if any (status, tests).
pub async fn read(remote: &Remote) -> Result<Option<Lease>, ReplicaError> {
    remote
        .get(LEASE)
        .await?
        .map(|v| serde_json::from_slice(&v.bytes))
        .transpose()
        .map_err(|e| ReplicaError::corrupt(LEASE, e.to_string()))
}

fn taken(l: &Lease) -> Taken {
    Taken {
        holder: l.holder.clone(),
        host: l.host.clone(),
        generation: l.generation,
        expires_at: l.renewed_at + chrono::Duration::milliseconds(l.ttl_ms as i64),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// This data directory's node id (created on first use): a restarted server is the same
/// holder; a server on another data directory is not.
pub fn node_id(data_dir: &std::path::Path) -> Result<String, ReplicaError> {
    let path = data_dir.join("replica-node-id");
    let io = |e: std::io::Error| ReplicaError::Config(format!("replica node id: {}", e.kind()));
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        _ => {
            let id = format!("{:032x}", rand::random::<u128>());
            crate::storage::files::write_atomic(&path, id.as_bytes()).map_err(io)?;
            Ok(id)
        }
    }
}
