//! Records libtorch's directory as the binary's run path, so `isoflop` (and the workers it
//! starts) find libtorch without LD_LIBRARY_PATH. LD_LIBRARY_PATH still takes precedence
//! (the linker writes DT_RUNPATH), so a binary carried to another machine can point at that
//! machine's libtorch.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{lib}");
    }
}
