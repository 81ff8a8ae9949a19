# Tuning experiment for the 4-bit GEMV: builds bench_cuda with several (GEMV_WU, GEMV_WARPS,
# GEMV_MINB) and prints the M = 1 / 16 rows at (4096, 14336). Run from the repo root on the device.
D=/tmp/deps; L=$D/usr/lib/x86_64-linux-gnu; export LD_LIBRARY_PATH=$L:$L/openblas-pthread
mkdir -p $D; [ -e $D/.done ] || { for f in .debs/*.deb; do dpkg -x $f $D; done; touch $D/.done; }
for v in "8 8 1" "4 8 4" "16 4 1" "8 4 6" "4 4 8"; do  # measured 2026-11-25 (H100): "4 8 4" best
  set -- $v
  B=/tmp/vb_$1_$2_$3
  cmake -S . -B $B -DCMAKE_BUILD_TYPE=Release -DMSBNB_CUDA_ARCHS=90-real -DCMAKE_CUDA_FLAGS="-DGEMV_WU=$1 -DGEMV_WARPS=$2 -DGEMV_MINB=$3" \
   -DCJSON_INCLUDE_DIR=$D/usr/include -DCJSON_LIBRARY=$L/libcjson.so -DCBLAS_INCLUDE_DIR=$D/usr/include/x86_64-linux-gnu/openblas-pthread \
   -DOPENBLAS_LIBRARY=$L/openblas-pthread/libopenblas.so >/dev/null 2>&1
  cmake --build $B -j16 --target bench_cuda test_cuda_gemv >/dev/null 2>&1 || { echo "build $v failed"; continue; }
  echo "== WU=$1 WARPS=$2 MINB=$3"; $B/tests/test_cuda_gemv | tail -1
  $B/bench/bench_cuda --quick | grep -E "\| 1 \|.*(nf4|cuBLAS)|\| 16 \|.*nf4 "
done
