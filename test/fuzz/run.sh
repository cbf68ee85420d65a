#!/usr/bin/env bash
# Build and run the libFuzzer harnesses of the plain C parsers (clang).
#
#   run.sh smoke [RUNS]   each harness replays its committed corpus, then
#                         runs until RUNS inputs in all (default 20000) with
#                         a fixed seed; prints "fuzz NAME ... ok|FAILED".
#                         This is the pass `make test` runs (a few seconds).
#   run.sh fuzz SECONDS   fuzz each harness for SECONDS (a development run),
#                         then merge what it found into the committed corpus,
#                         minimized (test/fuzz/corpus/NAME).
#
# FUZZ_BUILD names the build directory (default test/fuzz/build), FUZZ_SEED
# the smoke run's seed (default 1), FUZZ_HARNESSES a subset.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
build=${FUZZ_BUILD:-$here/build}
harnesses=${FUZZ_HARNESSES:-"subject coverage url_mask json"}
CLANG=${CLANG:-clang}

# The source file each harness exercises.
source_of() {
    case $1 in
        subject|coverage) echo "$top/src/subject.c" ;;
        url_mask) echo "$top/src/url_mask.c" ;;
        json) echo "$top/src/envelope_json.c" ;;
        *) echo "unknown harness $1" >&2; return 1 ;;
    esac
}

build_one() {
    local name=$1 src
    src=$(source_of "$name") || return 1
    mkdir -p "$build"
    "$CLANG" -g -O1 -Wall -Wextra -Wno-unused-parameter \
        -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
        -I"$top/src" -I"$here" -o "$build/fuzz_$name" "$here/fuzz_$name.c" "$src"
}

if ! command -v "$CLANG" >/dev/null; then
    echo "fuzz: $CLANG not found (make deps installs clang)" >&2
    exit 2
fi

mode=${1:-smoke}
status=0
case $mode in
    smoke)
        runs=${2:-20000}
        for name in $harnesses; do
            log="$build/smoke_$name.log"
            rm -rf "$build/new_$name" "$build/artifacts_$name"
            mkdir -p "$build/new_$name" "$build/artifacts_$name"
            if ! build_one "$name" >"$build/build_$name.log" 2>&1; then
                echo "fuzz $name ... FAILED (build)"; cat "$build/build_$name.log"; status=1; continue
            fi
            # new inputs go to a scratch directory: the committed corpus stays as it is
            if "$build/fuzz_$name" -runs="$runs" -seed="${FUZZ_SEED:-1}" \
                -dict="$here/dict/$name.dict" -artifact_prefix="$build/artifacts_$name/" \
                "$build/new_$name" "$here/corpus/$name" >"$log" 2>&1; then
                echo "fuzz $name ... ok ($(grep -oE 'Done [0-9]+ runs' "$log" | tail -1))"
            else
                echo "fuzz $name ... FAILED"
                tail -n 30 "$log"
                for a in "$build/artifacts_$name"/*; do
                    [ -f "$a" ] || continue
                    echo "--- input that failed ($a), as hex:"; od -An -tx1 "$a" | head -20
                done
                status=1
            fi
        done
        ;;
    fuzz)
        secs=${2:?usage: run.sh fuzz SECONDS}
        for name in $harnesses; do
            build_one "$name" || { status=1; continue; }
            work="$build/corpus_$name"
            mkdir -p "$work" "$build/artifacts_$name"
            echo "== fuzzing $name for $secs s"
            "$build/fuzz_$name" -max_total_time="$secs" -print_final_stats=1 \
                -dict="$here/dict/$name.dict" -artifact_prefix="$build/artifacts_$name/" \
                "$work" "$here/corpus/$name" 2>&1 | grep -E '^(#[0-9]+ +DONE|Done|stat::number_of_executed_units|stat::peak_rss|==|SUMMARY|property)' || true
            [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "fuzz $name: FAILED, see $build/artifacts_$name"; status=1; continue; }
            # minimize: keep the inputs that reach all coverage found so far
            min="$build/min_$name"
            rm -rf "$min"; mkdir -p "$min"
            "$build/fuzz_$name" -merge=1 "$min" "$here/corpus/$name" "$work" >"$build/merge_$name.log" 2>&1 \
                || { echo "fuzz $name: merge failed"; tail "$build/merge_$name.log"; status=1; continue; }
            rm -rf "$here/corpus/$name"; mv "$min" "$here/corpus/$name"
            echo "fuzz $name: corpus $(ls "$here/corpus/$name" | wc -l) files, $(du -sk "$here/corpus/$name" | cut -f1) kB"
        done
        ;;
    *)
        echo "usage: run.sh smoke [RUNS] | fuzz SECONDS" >&2
        exit 2
        ;;
esac
exit $status
