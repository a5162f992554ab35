//! The replica's building blocks against a local directory (`file://`): fencing by the lease,
//! reading the log back (a gap is an error, never skipped), and the drill's rotation. The S3
//! backend is exercised end to end by `tests/it/replica.rs` against a real S3 API server.

use std::time::Duration;

use bytes::Bytes;

use super::remote::{Put, Remote};
use super::segment::Segment;
use super::{fetch, layout, lease, ReplicaError};
use crate::events::model::test_event as event;

fn remote() -> (tempfile::TempDir, Remote) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    (dir, Remote::open(&url, None).unwrap())
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn ship(r: &Remote, first: u64, last: u64) {
    let seg = Segment::new((first..=last).map(event).collect(), None);
    let put = r
        .put_create(
            &layout::segment(first, last),
            Bytes::from(seg.encode().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(put, Put::Created);
}

#[test]
fn create_only_never_replaces() {
    rt().block_on(async {
        let (_d, r) = remote();
        assert_eq!(
            r.put_create("x", Bytes::from_static(b"1")).await.unwrap(),
            Put::Created
        );
        assert_eq!(
            r.put_create("x", Bytes::from_static(b"2")).await.unwrap(),
            Put::Existed
        );
        assert_eq!(&r.get_bytes("x").await.unwrap()[..], b"1");
    });
}

#[test]
fn one_holder_per_prefix_until_the_lease_expires_or_is_released() {
    rt().block_on(async {
        let (_d, r) = remote();
        let ttl = Duration::from_millis(400);
        let mut a = lease::acquire(&r, "node-a", ttl)
            .await
            .unwrap()
            .expect("a takes it");
        assert_eq!(a.lease.generation, 1);
        let taken = lease::acquire(&r, "node-b", ttl)
            .await
            .unwrap()
            .expect_err("b is fenced");
        assert_eq!(taken.holder, "node-a");
        // A restart of the same node takes it back at once (a new generation).
        let a2 = lease::acquire(&r, "node-a", ttl)
            .await
            .unwrap()
            .expect("same node");
        assert_eq!(a2.lease.generation, 2);
        // The old handle's renewal fails: its version tag is stale.
        assert!(
            lease::renew(&r, &mut a).await.unwrap().is_err(),
            "a stale holder is fenced"
        );
        tokio::time::sleep(ttl + Duration::from_millis(100)).await;
        let b = lease::acquire(&r, "node-b", ttl)
            .await
            .unwrap()
            .expect("expired: b takes over");
        assert_eq!(b.lease.generation, 3);
        lease::release(&r, &b).await.unwrap();
        let c = lease::acquire(&r, "node-c", ttl)
            .await
            .unwrap()
            .expect("released: c at once");
        assert_eq!(c.lease.generation, 4);
    });
}

#[test]
fn the_log_reads_back_in_order_and_a_gap_is_an_error() {
    rt().block_on(async {
        let (_d, r) = remote();
        ship(&r, 1, 3).await;
        ship(&r, 4, 10).await;
        assert_eq!(fetch::log_head(&r).await.unwrap(), 10);
        let segs = fetch::read_log(&r, 2, None).await.unwrap();
        let seqs: Vec<u64> = segs
            .iter()
            .flat_map(|s| s.events.iter().map(|e| e.seq))
            .collect();
        assert_eq!(seqs, (3..=10).collect::<Vec<_>>());
        let upto = fetch::read_log(&r, 0, Some(5)).await.unwrap();
        assert_eq!(upto.last().unwrap().events.last().unwrap().seq, 5);
        ship(&r, 14, 15).await;
        match fetch::read_log(&r, 0, None).await {
            Err(ReplicaError::Gap { from, to }) => assert_eq!((from, to), (11, 13)),
            other => panic!("expected a gap, got {other:?}"),
        }
    });
}

#[test]
fn the_drill_reads_every_block_once_per_cycle() {
    rt().block_on(async {
        let (_d, r) = remote();
        for i in 0..40u32 {
            let data = vec![i as u8; 1000];
            let hash = blake3::hash(&data);
            let file = crate::snapshot::blocks::compress_for_tests(&data);
            r.put_create(&layout::block(&hash), Bytes::from(file))
                .await
                .unwrap();
        }
        let mut read = 0;
        for run in 1..=3 {
            let d = fetch::drill(&r, 34).await.unwrap();
            assert_eq!((d.run, d.cycle, d.blocks_total), (run, 3, 40));
            assert!(d.bad.is_empty(), "{:?}", d.bad);
            read += d.blocks_read;
        }
        assert_eq!(read, 40);
        // A damaged block is reported by the run whose slice holds it.
        let victim = r.list(layout::BLOCKS).await.unwrap().remove(0).name;
        let mut bytes = r.get_bytes(&victim).await.unwrap().to_vec();
        bytes[3] ^= 0xff;
        r.put_overwrite(&victim, Bytes::from(bytes)).await.unwrap();
        let mut bad = Vec::new();
        for _ in 0..3 {
            bad.extend(fetch::drill(&r, 34).await.unwrap().bad);
        }
        assert_eq!(bad.len(), 1, "{bad:?}");
    });
}
