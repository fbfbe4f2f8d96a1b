#!/usr/bin/env bash
# Builds the fuzz targets with libFuzzer and runs each for the given seconds (default 30),
# starting from its committed corpus (docs/RELIABILITY.md). Exits non-zero at the first finding;
# libFuzzer writes the input that found it (crash-*, timeout-*, oom-*) to the working folder.
#   Fuzz/run.sh [seconds] [target ...]      targets: those of FuzzDecoders (docs/RELIABILITY.md)
set -euo pipefail
cd "$(dirname "$0")/.."
# Swift's backtracer would take a trap's signal before libFuzzer, which then writes no crash file.
export SWIFT_BACKTRACE=enable=no
seconds="${1:-30}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(json handshake proof jwt encoding pem der aic webhook session-frames attestation operations ticket)
fi
swift build --build-path .build-fuzz -Xswiftc -sanitize=fuzzer -Xswiftc -DFUZZING \
    --product FuzzDecoders >/dev/null
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for target in "${targets[@]}"; do
    corpus="$work/$target"
    mkdir -p "$corpus"
    cp Fuzz/Decoders/corpus/"$target"/* "$corpus/"
    binary=.build-fuzz/debug/FuzzDecoders
    length=16384
    if [ "$target" = session-frames ]; then length=4096; fi
    log="$work/$target.log"
    if ! ATH_FUZZ_TARGET="$target" "$binary" "$corpus" -max_total_time="$seconds" -max_len="$length" \
        -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 >"$log" 2>&1; then
        tail -n 40 "$log"
        echo "fuzz: $target: FINDING (see above)"
        exit 1
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
    edges=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*' || echo 0)
    echo "fuzz: $target: ${runs} executions in ${seconds} s, ${edges} coverage edges, no finding"
    if [ -n "${ATH_FUZZ_KEEP:-}" ]; then
        dest=Fuzz/Decoders/corpus/"$target"
        ATH_FUZZ_TARGET="$target" "$binary" -merge=1 "$dest" "$corpus" >/dev/null 2>&1 || true
    fi
done
