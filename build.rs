//! Compiles proto/lnrs/v1/*.proto (and the CloudEvents format they import) with protox (pure
//! Rust: no system protoc) and generates the tonic/prost code; also writes the encoded
//! descriptor set that gRPC reflection serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let mut files: Vec<PathBuf> = std::fs::read_dir("proto/lnrs/v1")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "proto"))
        .collect();
    files.sort();
    // Source info carries the .proto comments into rustdoc and reflection; imports make the
    // descriptor set self-contained for reflection clients.
    let fds = protox::Compiler::new(["proto"])?
        .include_imports(true)
        .include_source_info(true)
        .open_files(&files)?
        .file_descriptor_set();
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("lnrs_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    // Map fields as BTreeMap: their encoding is then canonical (sorted keys), so an identical
    // retry has an identical fingerprint (AIP-155), and maps print in a stable order.
    // Our codec: a request that does not decode is INVALID_ARGUMENT, not tonic-prost's INTERNAL.
    tonic_prost_build::configure()
        .codec_path("crate::service::codec::LnrsCodec")
        .build_client(true)
        .build_server(true)
        .btree_map(".")
        .compile_fds(fds)?;
    Ok(())
}
