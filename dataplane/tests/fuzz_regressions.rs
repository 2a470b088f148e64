//! Replays the fuzz corpus (`dataplane/fuzz/corpus/<target>`) and every crash reproducer found
//! so far (`dataplane/fuzz/regressions/<target>`) through the fuzz targets, so a fixed finding
//! stays fixed and the properties the targets assert hold for every input ever kept. Runs
//! without libFuzzer; `make fuzz` searches for new inputs.

use std::path::{Path, PathBuf};

use tollgate_dataplane::fuzz::{self, TARGETS};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Runs `target` over every file of its corpus and reproducers; returns how many.
fn replay(name: &str, target: fn(&[u8])) -> usize {
    let mut inputs = Vec::new();
    for kind in ["corpus", "regressions"] {
        let dir = fuzz_dir().join(kind).join(name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_file() {
                inputs.push(path);
            }
        }
    }
    inputs.sort();
    for path in &inputs {
        let data = std::fs::read(path).unwrap();
        let outcome = std::panic::catch_unwind(|| target(&data));
        assert!(
            outcome.is_ok(),
            "{name} fails on {} (replay: the input is that file)",
            path.display()
        );
    }
    inputs.len()
}

macro_rules! replays {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            let n = replay(stringify!($name), fuzz::$name);
            assert!(n > 0, "no corpus for {}", stringify!($name));
            println!("{}: {n} inputs replayed", stringify!($name));
        }
    )*};
}

replays!(
    sse_framer,
    sse_usage,
    tool_filter,
    tool_guard,
    request_inspect,
    policy_load,
    mcp_jsonrpc
);

#[test]
fn every_target_has_a_binary_a_corpus_and_a_test() {
    let this = include_str!("fuzz_regressions.rs");
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for (name, _) in TARGETS {
        assert!(
            fuzz_dir()
                .join("fuzz_targets")
                .join(format!("{name}.rs"))
                .is_file(),
            "no fuzz_targets/{name}.rs"
        );
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "{name} missing from fuzz/Cargo.toml"
        );
        assert!(fuzz_dir().join("corpus").join(name).is_dir(), "no corpus/{name}");
        assert!(
            this.lines().any(|l| l.trim().trim_end_matches(',') == *name),
            "no replay test for {name}"
        );
    }
}
