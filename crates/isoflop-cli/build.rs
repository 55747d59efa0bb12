//! Records libtorch's directory as the binary's run path, so `isoflop` (and the workers it
//! starts) find libtorch without LD_LIBRARY_PATH. LD_LIBRARY_PATH still takes precedence
//! (the linker writes DT_RUNPATH), so a binary carried to another machine can point at that
//! machine's libtorch.
//!
//! When that libtorch has CUDA (`libtorch_cuda.so`), the binaries link it explicitly with
//! `--no-as-needed`: no symbol of it is referenced, so the linker would otherwise drop it,
//! its CUDA hooks would never register, and `tch::Cuda::is_available()` would be false.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{lib}");
        println!("cargo:rustc-env=ISOFLOP_LIBTORCH_LIB={lib}");
        let cuda = std::path::Path::new(&lib).join("libtorch_cuda.so");
        println!("cargo:rerun-if-changed={}", cuda.display());
        if cuda.exists() {
            println!("cargo:rustc-link-arg-bins=-L{lib}");
            println!("cargo:rustc-link-arg-bins=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }
}
