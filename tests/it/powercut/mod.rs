//! Power loss, not just a crash (issue 11). A `kill -9` keeps the page cache, so it never
//! tests fsync ordering: here the server runs on [`fs::PowerFs`], an in-memory FUSE file system
//! that keeps unsynced writes in memory and drops them at a simulated power cut. The scenarios
//! cut the power at every fsync boundary of the delete, snapshot-commit and restore paths and
//! check the invariants of `common::invariants` on the durable image.

pub mod fs;
mod scenarios;
mod selftest;
