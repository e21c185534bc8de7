//! Builds the guest module (`host/guest`, for `wasm32-wasip1`; profile `guest` for release
//! builds of the host, `guest-dev` for debug ones) so that
//! `medallion` finds it without manual steps: its path is compiled in as
//! `MEDALLION_GUEST_BUILT` (the `MEDALLION_GUEST` environment variable overrides it at run
//! time).
//!
//! The guest builds in its own target folder (`<target>/guest-build`) with a cleaned
//! environment: a nested cargo must not wait for the lock the outer build holds, nor inherit
//! its `--target`, flags or clippy wrapper. It rebuilds only when the core or the guest
//! changed, so `cargo clippy` and `cargo test` pay for it once. If it cannot be built (no
//! `wasm32-wasip1` target, say), the host still builds and says so; `--engine native` works
//! regardless. `MEDALLION_SKIP_GUEST_BUILD=1` skips it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let workspace = manifest
        .parent()
        .expect("host/ is in the workspace")
        .to_path_buf();
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it"));
    // OUT_DIR is <target>/<profile>/build/<package>/out.
    let target_dir = out
        .ancestors()
        .nth(4)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| workspace.join("target"));
    let guest_target = target_dir.join("guest-build");
    // Debug builds of the host (tests, CI) get a guest at opt-level 1, which compiles in about
    // half the time of the release guest's opt-level 3; release builds get the fast one.
    let profile = match std::env::var("PROFILE").as_deref() {
        Ok("release") => "guest",
        _ => "guest-dev",
    };
    let wasm = guest_target.join(format!("wasm32-wasip1/{profile}/medallion_guest.wasm"));
    println!("cargo:rustc-env=MEDALLION_GUEST_BUILT={}", wasm.display());
    println!("cargo:rerun-if-env-changed=MEDALLION_SKIP_GUEST_BUILD");
    for path in [
        "core/src",
        "core/Cargo.toml",
        "host/guest",
        "Cargo.toml",
        "Cargo.lock",
        ".cargo/config.toml",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(path).display());
    }
    if std::env::var_os("MEDALLION_SKIP_GUEST_BUILD").is_some() {
        return;
    }

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workspace)
        .args([
            "build",
            "--locked",
            "-p",
            "medallion-guest",
            "--target",
            "wasm32-wasip1",
        ])
        .args(["--profile", profile, "--target-dir"])
        .arg(&guest_target);
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        // Keep the jobserver (so the nested build shares the outer build's cores) and the
        // cargo home; drop everything that describes the outer build.
        let outer = (key.starts_with("CARGO_") && key != "CARGO_HOME" && key != "CARGO_MAKEFLAGS")
            || key.starts_with("RUSTC_")
            || key.starts_with("DEP_")
            || matches!(
                key,
                "RUSTC"
                    | "RUSTDOC"
                    | "RUSTFLAGS"
                    | "RUSTDOCFLAGS"
                    | "TARGET"
                    | "HOST"
                    | "OUT_DIR"
                    | "PROFILE"
                    | "OPT_LEVEL"
                    | "DEBUG"
                    | "NUM_JOBS"
                    | "CARGO_ENCODED_RUSTFLAGS"
            );
        if outer {
            cmd.env_remove(key);
        }
    }
    match cmd.output() {
        Ok(o) if o.status.success() && wasm.exists() => {}
        Ok(o) => {
            let stderr = String::from_utf8_lossy(&o.stderr);
            println!(
                "cargo:warning=the guest module was not built; `medallion` needs --engine native \
                 or MEDALLION_GUEST (is the wasm32-wasip1 target installed? `rustup target add wasm32-wasip1`)"
            );
            for line in stderr
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                println!("cargo:warning=  {line}");
            }
        }
        Err(e) => println!("cargo:warning=cannot run cargo to build the guest module: {e}"),
    }
}
