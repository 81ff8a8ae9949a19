#!/usr/bin/env bash
# Builds msbnb with CUDA on the lent GPU machine and runs what is asked:
#   bench/cuda_device.sh [test] [sanitize] [bench] [adam] [int8] [fold] [sass]
#   test: the CUDA tests; sanitize: them under compute-sanitizer memcheck; bench: bench_cuda;
#   adam: the AdamW table with torch's fused AdamW measured first (bench/torch_adamw.py);
#   int8: bench_cuda --int8; fold: bench_cuda --fold (4-bit M = 1 variants); sass: instruction counts of the kernels named in $SASS_FUNS;
#   profile: Nsight Compute sections of the int8 GEMV and 8-bit AdamW kernels.
# The machine has the CUDA toolkit but not libcjson-dev / libopenblas-dev: their Debian
# packages travel in .debs/ (apt-get download here) and are unpacked under /tmp/deps, not /.
# MSBNB_CUDA_PREBUILT=DIR: use test_cuda_* and bench_cuda built elsewhere (same CUDA
# 13.0, -DMSBNB_CUDA_ARCHS=90-real) from DIR instead of building here (saves device time).
set -uo pipefail
D=/tmp/deps
B=${MSBNB_CUDA_BUILD:-/tmp/cbuild}
OUT=${OUT:-/tmp/out}
mkdir -p "$D" "$OUT"
if [ ! -e "$D/.done" ]; then
  for f in .debs/*.deb; do dpkg -x "$f" "$D"; done
  touch "$D/.done"
fi
L=$D/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH=$L:$L/openblas-pthread:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
P=${MSBNB_CUDA_PREBUILT:-}
if [ -n "$P" ] && ! ldd "$P/bench_cuda" | grep -q "not found"; then
  T=$P; BENCH=$P/bench_cuda
  echo "prebuilt binaries from $P"
else
  [ -n "$P" ] && { echo "prebuilt binaries miss libraries:"; ldd "$P/bench_cuda" | grep "not found"; }
  cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Release -DMSBNB_CUDA_ARCHS=90-real \
    -DCJSON_INCLUDE_DIR=$D/usr/include -DCJSON_LIBRARY=$L/libcjson.so \
    -DCBLAS_INCLUDE_DIR=$D/usr/include/x86_64-linux-gnu/openblas-pthread \
    -DOPENBLAS_LIBRARY=$L/openblas-pthread/libopenblas.so >"$OUT/cmake.log" 2>&1 || { tail -30 "$OUT/cmake.log"; exit 1; }
  cmake --build "$B" -j16 >"$OUT/build.log" 2>&1 || { grep -B2 -A8 -m5 'error' "$OUT/build.log"; tail -20 "$OUT/build.log"; exit 1; }
  echo "build ok"
  T=$B/tests; BENCH=$B/bench/bench_cuda
fi
rc=0
for what in "$@"; do
  case "$what" in
    test)
      for t in "$T"/test_cuda_*; do
        timeout 300 "$t" >/tmp/t.log 2>&1; r=$?
        { echo "=== $(basename $t) rc=$r"; cat /tmp/t.log; } >>"$OUT/tests.log"
        echo "$(basename $t): rc=$r $(tail -1 /tmp/t.log)"
        [ $r -eq 0 ] || { grep -m8 -i "fail\|error\|off" /tmp/t.log; rc=1; }
      done ;;
    sanitize)
      for t in ${SAN_TESTS:-"$T"/test_cuda_*}; do  # SAN_TESTS: a subset (paths)
        echo "== compute-sanitizer $t"
        # API errors off: test_cuda_quant provokes an out-of-memory cudaMalloc on purpose
        MSBNB_SANITIZE_RUN=1 compute-sanitizer --tool memcheck --leak-check full --report-api-errors no --error-exitcode 9 "$t" >/tmp/s.log 2>&1
        r=$?; cat /tmp/s.log >>"$OUT/sanitize.log"; tail -4 /tmp/s.log; echo "rc=$r"; [ $r -eq 0 ] || rc=1
      done ;;
    bench) "$BENCH" 2>&1 | tee "$OUT/bench.log" || rc=1 ;;
    adam)
      tm=$(PYTHONUNBUFFERED=1 python3 bench/torch_adamw.py 2>&1 | tee "$OUT/torch.log" | awk '/^torch_fused_adamw_ms/ {print $2}')
      cat "$OUT/torch.log"
      MSBNB_BENCH_TORCH_ADAMW_MS=$tm "$BENCH" --adam 2>&1 | tee "$OUT/adam.log" || rc=1 ;;
    int8) "$BENCH" --int8 2>&1 | tee "$OUT/int8.log" || rc=1 ;;
    fold) "$BENCH" --fold 2>&1 | tee "$OUT/fold.log" || rc=1 ;;
    sass)
      for f in ${SASS_FUNS:-}; do
        cuobjdump -sass -fun "$f" "$BENCH" >/tmp/sass.txt 2>&1
        { echo "=== $f"; cat /tmp/sass.txt; } >>"$OUT/sass.txt"
        echo "$f: $(grep -c '^ */\*[0-9a-f]*\*/' /tmp/sass.txt) instructions"
      done ;;
    profile) # Nsight Compute on the int8 GEMV at (4096, 14336) and the 8-bit AdamW (clocks left alone)
      S="--section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats"
      MSBNB_BENCH_SHAPE=1 ncu --clock-control none -k regex:'gemv_i8_pipe|int8_rowwise_kernel' -c 4 $S "$BENCH" --int8 >"$OUT/ncu.txt" 2>&1
      ncu --clock-control none -k regex:adamw_8bit_fast -c 1 $S --section ComputeWorkloadAnalysis "$BENCH" --adam >>"$OUT/ncu.txt" 2>&1
      grep -E "^  [a-z_]|Duration|DRAM Throughput|Memory Throughput|Achieved Occupancy|Registers Per|Issue Slots Busy|Issued Ipc|Warp Cycles Per Issued" "$OUT/ncu.txt" | head -60 ;;
    *) echo "unknown step $what"; rc=1 ;;
  esac
done
exit $rc
