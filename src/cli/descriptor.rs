//! `lnrs descriptor-set`: writes the service's encoded FileDescriptorSet (every lnrs.v1 file
//! with its imports, google/api and google/protobuf included, and the google.api.http
//! annotation on every method) for an HTTP/JSON gateway such as Envoy's `grpc_json_transcoder`
//! (docs/DEPLOYMENT.md). It is the set the server embeds for reflection, so the gateway and
//! the server can never disagree about the contract, and no protoc is needed.

use std::path::Path;

use crate::pb;

/// Writes the descriptor set to `out` (replacing the file if it exists).
pub fn write(out: &Path) -> std::io::Result<()> {
    std::fs::write(out, pb::FILE_DESCRIPTOR_SET)
}
