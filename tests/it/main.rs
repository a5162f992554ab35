//! The integration suite: ONE test binary (each binary links DuckDB, so one link instead of
//! six), a module per area. Every test starts real servers on 127.0.0.1:0 — in this process
//! (`common::TestServer`) or as the real `lnrs` binary (`common::ChildServer`) — and talks to
//! them through the generated clients.

mod common;

mod ahead;
mod archive;
mod audit;
mod bench;
mod campaign;
mod cli;
mod dataio;
mod entities;
mod events;
mod follower;
mod fuzz;
mod grpcweb;
mod history;
mod http;
mod layers;
mod nats;
mod pins;
mod powercut;
mod process;
mod production;
mod recovery;
mod replica;
mod snapshots;
mod timeline;
mod traces;
