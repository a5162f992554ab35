//! Compiles proto/lnrs/v1/*.proto (and what they import: the CloudEvents format, google.api
//! and google.rpc) with protox (pure Rust: no system protoc) and generates the tonic/prost code
//! (src/lib.rs includes lnrs.v1 and io.cloudevents.v1); also writes the encoded descriptor set
//! that gRPC reflection serves and `lnrs descriptor-set` writes out for an HTTP/JSON gateway.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let mut files: Vec<PathBuf> = std::fs::read_dir("proto/lnrs/v1")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "proto"))
        .collect();
    files.sort();
    // Not imported by lnrs.v1, but every lnrs error carries these types in its
    // grpc-status-details-bin trailer: in the set, reflection clients and an HTTP/JSON gateway
    // (Envoy's convert_grpc_status) can decode the details. The server's own code uses tonic-types.
    files.extend(
        ["google/rpc/status.proto", "google/rpc/error_details.proto"]
            .map(|f| PathBuf::from("proto").join(f)),
    );
    // Source info carries the .proto comments into rustdoc and reflection; imports make the
    // descriptor set self-contained for reflection clients and gateways (google/api and
    // google/protobuf included).
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler
        .include_imports(true)
        .include_source_info(true)
        .open_files(&files)?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // Encoded by protox itself: prost_types drops extension options, and the google.api.http
    // annotation of every method is one (Envoy's transcoder reads it from this set).
    std::fs::write(
        out.join("lnrs_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    let fds = compiler.file_descriptor_set();
    // Map fields as BTreeMap: their encoding is then canonical (sorted keys), so an identical
    // retry has an identical fingerprint (AIP-155), and maps print in a stable order.
    tonic_prost_build::configure()
        .codec_path(CODEC)
        .build_client(true)
        .build_server(false)
        .btree_map(".")
        .compile_fds(fds.clone())?;
    compile_servers(fds, &out.join("servers"))
}

/// Our codec: a request that does not decode is INVALID_ARGUMENT, not tonic-prost's INTERNAL.
const CODEC: &str = "crate::service::codec::LnrsCodec";

/// The List responses a server sends pre-encoded (`service::wire::Encoded`).
const PRE_ENCODED: [&str; 6] = [
    "ListMeasuresResponse",
    "ListAreasResponse",
    "ListPrioritiesResponse",
    "ListSpeciesResponse",
    "ListHabitatsResponse",
    "ListGrantsResponse",
];

/// The servers, generated apart from the messages and clients (into `dir`): every message is
/// the first pass's (an extern path, so none is generated twice) except the List responses
/// in [`PRE_ENCODED`], which a server answers with bytes it encoded once per cached page.
/// Clients decode the generated message from the same bytes.
fn compile_servers(
    fds: tonic_prost_build::FileDescriptorSet,
    dir: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let mut servers = tonic_prost_build::configure()
        .codec_path(CODEC)
        .build_client(false)
        .build_server(true)
        .out_dir(dir)
        .extern_path(".lnrs.v1", "crate::generated::lnrs::v1")
        .extern_path(
            ".io.cloudevents.v1",
            "crate::generated::io::cloudevents::v1",
        )
        // Imported by the protos but no service's message: skipped rather than generated.
        .extern_path(".google.api", "crate::generated::unused")
        .extern_path(".google.rpc", "crate::generated::unused");
    for name in PRE_ENCODED {
        servers = servers.extern_path(format!(".lnrs.v1.{name}"), "crate::service::wire::Encoded");
    }
    servers.compile_fds(fds)?;
    Ok(())
}
