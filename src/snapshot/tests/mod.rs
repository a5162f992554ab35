//! Tests of the snapshot engine against real DuckDB files: round trips, deduplication,
//! verification, index rebuilds, retention, degraded storage; property tests in `props`, the
//! kill-at-step crash tests in `crash`. `fixtures` builds the databases.

mod crash;
mod fixtures;
mod props;
mod store;
