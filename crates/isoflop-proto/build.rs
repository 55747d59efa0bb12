//! Compiles proto/isoflop/v1/*.proto with protox (pure Rust), so no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time, not with env!(): a build script compiled for one checkout may be reused
    // by another that shares the target directory, and must read that checkout's protos.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let root = std::path::Path::new(&manifest_dir).join("../../proto");
    let files = ["isoflop/v1/common.proto", "isoflop/v1/worker.proto", "isoflop/v1/control.proto"];
    for f in &files {
        // Relative: cargo resolves it against the package root of the checkout being built.
        println!("cargo:rerun-if-changed=../../proto/{f}");
    }
    let fds = protox::compile(files, [&root])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
