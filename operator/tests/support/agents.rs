//! The real `tollgate-proxy` the end-to-end tests run (Claude Code: `tollgate_tests::claude`).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::operator_dir;

/// `target/<profile>/tollgate-proxy`, built on demand (another package's binary is not built
/// for this package's tests).
pub fn proxy_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("tollgate-proxy");
    if !bin.exists() {
        println!(
            "note: {} is missing; running `cargo build -p tollgate-dataplane --bin tollgate-proxy`",
            bin.display()
        );
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "-p", "tollgate-dataplane", "--bin", "tollgate-proxy"])
            .current_dir(operator_dir().join(".."))
            .status()
            .expect("running cargo build");
        assert!(status.success() && bin.exists(), "could not build tollgate-proxy");
    }
    bin
}
