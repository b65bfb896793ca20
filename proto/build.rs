//! Compiles `quarry/v1/*.proto` with protox (pure Rust, no system `protoc`) and
//! generates tonic/prost code, plus the encoded file descriptor set that server
//! reflection serves.

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
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
