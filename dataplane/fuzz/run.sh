#!/usr/bin/env bash
# Coverage-guided fuzzing of tollgate-dataplane's parsers with libFuzzer, on stable Rust.
#
# cargo-fuzz needs a nightly compiler (for -Zsanitizer); libFuzzer itself does not: rustc's
# stable `-C passes=sancov-module` plus the SanitizerCoverage options below give libFuzzer its
# edge counters and comparison tracing, and libfuzzer-sys builds libFuzzer from source with the
# system C++ compiler. No AddressSanitizer: the targets are safe Rust, so a finding is a panic
# (a broken property, an out-of-bounds index, an overflow: debug assertions and overflow checks
# are on), a timeout, an out-of-memory or a stack overflow.
#
#   FUZZ_SECONDS=60     time per target
#   FUZZ_TARGETS="..."  targets to run (default: all, see fuzz_targets/)
#   FUZZ_MERGE=1        fold inputs that found new coverage into the committed corpus/
#
# Each target reads corpus/<target> (committed) and regressions/<target> (committed crash
# reproducers, fixed) and writes new inputs to the work corpus under target/. A crash, timeout
# or out-of-memory input lands in artifacts/<target>/: fix it, then move it to regressions/.
set -euo pipefail
cd "$(dirname "$0")"

seconds=${FUZZ_SECONDS:-60}
targets=${FUZZ_TARGETS:-$(cd fuzz_targets && ls ./*.rs | sed 's|^\./||; s|\.rs$||' | tr '\n' ' ')}
triple=$(rustc -vV | sed -n 's/^host: //p')
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$PWD/target}
# --target keeps these flags off build scripts and proc macros, which do not link libFuzzer.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"

cargo build --release --target "$triple" --bins

failed=0
summary=()
for t in $targets; do
    bin=$CARGO_TARGET_DIR/$triple/release/$t
    work=$CARGO_TARGET_DIR/corpus/$t
    log=$CARGO_TARGET_DIR/$t.log
    mkdir -p "$work" "artifacts/$t" "corpus/$t" "regressions/$t"
    before=$(find "artifacts/$t" -type f | wc -l)
    dict=()
    [ -f "dicts/$t.dict" ] && dict=(-dict="dicts/$t.dict")
    echo "== $t: ${seconds}s"
    status=0
    "$bin" "$work" "corpus/$t" "regressions/$t" "${dict[@]}" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
        -artifact_prefix="artifacts/$t/" -print_final_stats=1 >"$log" 2>&1 || status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    findings=$(( $(find "artifacts/$t" -type f ! -name 'slow-unit-*' | wc -l) - before ))
    if [ "$status" -ne 0 ] || [ "$findings" -gt 0 ]; then
        failed=1
        grep -m1 -A12 -E 'panicked|ERROR: libFuzzer' "$log" || tail -20 "$log"
    fi
    if [ "${FUZZ_MERGE:-0}" = 1 ]; then
        "$bin" -merge=1 "corpus/$t" "$work" >>"$log" 2>&1
    fi
    summary+=("$(printf '%-16s %12s runs %8s/s  cov %-6s corpus %-5s findings %s' \
        "$t" "${runs:-?}" "${speed:-?}" "${cov:-?}" "$(find "corpus/$t" -type f | wc -l)" "$findings")")
done

echo
echo "fuzzing summary (${seconds}s per target; logs in $CARGO_TARGET_DIR/<target>.log)"
printf '%s\n' "${summary[@]}"
exit "$failed"
