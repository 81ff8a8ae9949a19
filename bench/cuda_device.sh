#!/usr/bin/env bash
# Builds msbnb with CUDA on the lent GPU machine and runs what is asked:
#   bench/cuda_device.sh [test] [sanitize] [bench]
# The machine has the CUDA toolkit but not libcjson-dev / libopenblas-dev: their Debian
# packages travel in .debs/ (apt-get download here) and are unpacked under /tmp/deps, not /.
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
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Release -DMSBNB_CUDA_ARCHS=90-real \
  -DCJSON_INCLUDE_DIR=$D/usr/include -DCJSON_LIBRARY=$L/libcjson.so \
  -DCBLAS_INCLUDE_DIR=$D/usr/include/x86_64-linux-gnu/openblas-pthread \
  -DOPENBLAS_LIBRARY=$L/openblas-pthread/libopenblas.so >"$OUT/cmake.log" 2>&1 || { tail -30 "$OUT/cmake.log"; exit 1; }
cmake --build "$B" -j16 >"$OUT/build.log" 2>&1 || { grep -B2 -A8 -m5 'error' "$OUT/build.log"; tail -20 "$OUT/build.log"; exit 1; }
echo "build ok"
rc=0
for what in "$@"; do
  case "$what" in
    test) (cd "$B" && ctest -R cuda --output-on-failure --timeout 300) 2>&1 | tee "$OUT/test.log" | tail -40 || rc=1 ;;
    sanitize)
      for t in "$B"/tests/test_cuda_*; do
        echo "== compute-sanitizer $t"
        # API errors off: test_cuda_quant provokes an out-of-memory cudaMalloc on purpose
        MSBNB_SANITIZE_RUN=1 compute-sanitizer --tool memcheck --leak-check full --report-api-errors no --error-exitcode 9 "$t" >"$OUT/san_$(basename $t).log" 2>&1
        r=$?; tail -4 "$OUT/san_$(basename $t).log"; echo "rc=$r"; [ $r -eq 0 ] || rc=1
      done ;;
    bench) "$B"/bench/bench_cuda 2>&1 | tee "$OUT/bench.log" || rc=1 ;;
    *) echo "unknown step $what"; rc=1 ;;
  esac
done
exit $rc
