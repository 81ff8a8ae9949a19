# msbnb — top-level convenience wrapper around CMake/CTest.
#   make demo           run the main job on the bundled default
#   make test           build and run every test (CTest)
#   make test-sanitize  the same tests under ASan + UBSan
#   make bench          benchmarks (tables on stdout)
#   make fuzz           libFuzzer pass over the file parsers (FUZZ_SECONDS, default 60)
#   make test-cuda      CUDA tests (needs a GPU)
BUILD ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
FUZZ_SECONDS ?= 60
CMAKE_FLAGS ?=

.PHONY: all deps build test demo bench test-sanitize fuzz test-cuda clean

all: build

deps:
	@bash scripts/deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)

test: build
	@cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

test-sanitize: deps
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DMSBNB_SANITIZE=ON -DMSBNB_CUDA=OFF >/dev/null
	@cmake --build $(ASAN_BUILD) -j$(JOBS)
	@cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1 MSBNB_SANITIZE_RUN=1 ctest --output-on-failure -j$(JOBS)

demo: build
	@m=$${DEMO_MODEL:-tests/data/tiny-llama/fp32}; d=$(BUILD)/demo; rm -rf $$d && mkdir -p $$d && \
	echo "== msbnb quantize $$m -> NF4 + double quant" && \
	./$(BUILD)/msbnb quantize $$m $$d/nf4dq --type nf4 --double-quant && echo && \
	./$(BUILD)/msbnb inspect $$d/nf4dq --against $$m && echo && \
	echo "== msbnb quantize $$m -> INT8 (LLM.int8)" && \
	./$(BUILD)/msbnb quantize $$m $$d/int8 --type int8 && echo && \
	./$(BUILD)/msbnb inspect $$d/int8 --against $$m && echo && \
	echo "== size reduction" && du -b $$m/model.safetensors $$d/nf4dq/model.safetensors $$d/int8/model.safetensors

bench: build
	@for b in $(BUILD)/bench/bench_*; do echo "== $$b"; $$b || exit 1; done

fuzz:
	@bash scripts/deps.sh clang libclang-rt-14-dev
	@CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMSBNB_FUZZ=ON -DMSBNB_CUDA=OFF >/dev/null
	@cmake --build $(FUZZ_BUILD) -j$(JOBS) --target fuzzers
	@bash scripts/fuzz.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

test-cuda: build
	@cd $(BUILD) && ctest --output-on-failure -R cuda

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
