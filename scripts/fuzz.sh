#!/usr/bin/env bash
# Runs every libFuzzer target built in BUILD for SECONDS each, starting from the seed corpus
# in fuzz/corpus/<target> (copied: the tree's corpus is never modified) with fuzz/json.dict.
# Fails on any finding (crash, sanitizer report, leak, timeout) and leaves its reproducer
# in BUILD/fuzz-artifacts/.
# Usage: scripts/fuzz.sh BUILD SECONDS
set -euo pipefail
build=${1:?usage: scripts/fuzz.sh BUILD SECONDS}
seconds=${2:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
shopt -s nullglob
targets=("$build"/fuzz_*)
if [ ${#targets[@]} -eq 0 ]; then
  echo "fuzz.sh: no fuzz targets in $build (configure with -DMSBNB_FUZZ=ON and clang)" >&2
  exit 1
fi
mkdir -p "$build/fuzz-artifacts"
status=0
for bin in "${targets[@]}"; do
  [ -x "$bin" ] || continue
  name=$(basename "$bin"); short=${name#fuzz_}
  work="$build/fuzz-corpus/$short"
  rm -rf "$work"; mkdir -p "$work"
  if [ -d "$root/fuzz/corpus/$short" ]; then cp "$root/fuzz/corpus/$short"/* "$work"/; fi
  echo "== $name: ${seconds}s, seeds: $(ls "$work" | wc -l)"
  log="$build/fuzz-$short.log"
  if "$bin" "$work" -dict="$root/fuzz/json.dict" -max_total_time="$seconds" -timeout=10 \
       -rss_limit_mb=2048 -max_len=16384 -print_final_stats=1 \
       -artifact_prefix="$build/fuzz-artifacts/$short-" >"$log" 2>&1; then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
    echo "   ok: $runs inputs, $cov, corpus $(ls "$work" | wc -l), zero findings"
  else
    echo "   FINDING in $name (log: $log):" >&2
    grep -A30 -E 'ERROR: |runtime error|invariant violated|SUMMARY' "$log" | head -60 >&2 || tail -40 "$log" >&2
    status=1
  fi
done
exit $status
