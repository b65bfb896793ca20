//! Compiles `quarry/v1/*.proto` with protox (pure Rust, no system `protoc`) and
//! generates tonic/prost code, plus the encoded file descriptor set that server
//! reflection serves (and `quarry_proto::codec` walks).
//!
//! Every generated client and server uses `crate::codec::CheckedCodec`
//! instead of `tonic_prost::ProstCodec`, and every message implements
//! `prost::Name` (its full protobuf name) so the codec can find its
//! descriptor.

use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "quarry/v1/values.proto",
        "quarry/v1/sql.proto",
        "quarry/v1/assistant.proto",
        "quarry/v1/search.proto",
        "quarry/v1/summary.proto",
        "quarry/v1/usage.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let fds = protox::compile(files, ["."])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out.join("quarry_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    let mut config = tonic_prost_build::Config::new();
    config.enable_type_names();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::codec::CheckedCodec")
        .compile_fds_with_config(fds, config)?;
    Ok(())
}
