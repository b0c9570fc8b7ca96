# The two commands of the README. Everything else is in CMake.
BUILD_DIR ?= build
BUILD_TYPE ?= RelWithDebInfo
CUDA ?= AUTO
JOBS ?= $(shell nproc)
HTTP_PORT ?= 8000
GRPC_PORT ?= 8001

.PHONY: deps configure build up test unit e2e bench sanitize format clean

deps:
	@scripts/install-deps.sh $(BUILD_DIR)

configure: deps
	@if [ ! -f $(BUILD_DIR)/build.ninja ]; then \
	  cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) \
	    -DFERRY_ENABLE_CUDA=$(CUDA) -DCMAKE_C_COMPILER_LAUNCHER=ccache \
	    -DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache; \
	fi

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

examples: build
	$(BUILD_DIR)/venv/bin/python examples/make_examples.py

up: build examples
	@echo "ferry: starting ferry-agent (standalone) with the manifests in examples/"
	@echo "ferry: HTTP on http://127.0.0.1:$(HTTP_PORT), gRPC on 127.0.0.1:$(GRPC_PORT)"
	@echo "ferry: try: curl -s -X POST http://127.0.0.1:$(HTTP_PORT)/v2/models/wordfilter/infer -d '{\"inputs\":[{\"name\":\"text\",\"shape\":[1],\"datatype\":\"BYTES\",\"data\":[\"you are a darn fool\"]}]}'"
	exec $(BUILD_DIR)/node-agent/ferry-agent --manifests examples --http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT)

unit: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

e2e: build examples
	FERRY_BUILD_DIR=$(BUILD_DIR) $(BUILD_DIR)/venv/bin/python -m pytest -q tests/e2e

test: build examples
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)
	FERRY_BUILD_DIR=$(BUILD_DIR) $(BUILD_DIR)/venv/bin/python -m pytest -q tests/e2e

bench: build examples
	$(BUILD_DIR)/venv/bin/python perf/bench_agent.py --build-dir $(BUILD_DIR)

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

format:
	find sdk batching cuda kernels node-agent control-plane tests perf -name '*.h' -o -name '*.cc' -o -name '*.cu' | xargs clang-format -i

clean:
	rm -rf $(BUILD_DIR)
