#!/bin/sh
# Builds the libFuzzer target for the inventory loader and renderer (Tests/Fuzz/
# InventoryFuzz.swift, compiled with the library's Inventory, Render and Support sources)
# and runs it for SECONDS (default 20) over Tests/Fuzz/corpus. It does not write to the
# committed corpus: new inputs go to a scratch folder; crashes are left as crash-* files
# in the build folder and make the script exit non-zero.
# Usage: Tests/Fuzz/run.sh [SECONDS]   (BKFLEET_FUZZ_BUILD sets the build folder)
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
seconds=${1:-20}
build=${BKFLEET_FUZZ_BUILD:-${TMPDIR:-/tmp}/bkfleet-fuzz}
mkdir -p "$build/include" "$build/new-corpus"

# SwiftPM generates CTOML's module map; a direct swiftc build needs its own.
cat >"$build/include/module.modulemap" <<MAP
module CTOML {
    header "$root/Sources/CTOML/include/ctoml.h"
    export *
}
MAP

binary="$build/fuzz-inventory"
sources="$root/Sources/BKFleet/Inventory/*.swift $root/Sources/BKFleet/Render/*.swift
    $root/Sources/BKFleet/Support/*.swift $root/Tests/Fuzz/InventoryFuzz.swift"
# Rebuild only when a source is newer than the binary: CI reruns stay cheap.
stale=1
if [ -x "$binary" ]; then
    stale=0
    for f in $sources "$root/Sources/CTOML/ctoml.cpp"; do
        [ "$f" -nt "$binary" ] && stale=1
    done
fi
if [ "$stale" = 1 ]; then
    echo "fuzz: building $binary"
    clang++ -std=c++17 -O1 -g -fsanitize=fuzzer-no-link -fPIC \
        -DTOML_HEADER_ONLY=0 -DTOML_SHARED_LIB=1 -DTOML_EXCEPTIONS=1 \
        -I "$root/Sources/CTOML/include" -c "$root/Sources/CTOML/ctoml.cpp" \
        -o "$build/ctoml.o"
    # shellcheck disable=SC2086
    swiftc -sanitize=fuzzer -parse-as-library -Onone -g -module-name BKFleetFuzz \
        -swift-version 5 -I "$build/include" -I "$root/Sources/CCrypto" \
        $sources "$build/ctoml.o" -ltomlplusplus -lcrypto -lstdc++ -o "$binary"
fi

echo "fuzz: running for ${seconds}s over $root/Tests/Fuzz/corpus"
cd "$build"
# Swift's own backtracer would take the crash signal before libFuzzer saves the input.
SWIFT_BACKTRACE=enable=no BKFLEET_TEMPLATES="$root/templates" \
    "$binary" -max_total_time="$seconds" -timeout=5 \
    -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1 \
    "$build/new-corpus" "$root/Tests/Fuzz/corpus"
