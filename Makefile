# fluxserve: `make run` installs what is missing and serves; `make test` runs the whole suite.
HOST     ?= 127.0.0.1
PORT     ?= 8000
TLS_PORT ?= 8443
DATA_DIR ?= data
MODEL    ?= $(DATA_DIR)/models/flux-schnell-tiny
REDUX    ?= $(DATA_DIR)/models/flux-redux-tiny
# Bumped when the tiny models change shape, so an old data folder gets matching new ones.
TINY_STAMP := $(DATA_DIR)/models/.tiny-v2
PYTHON   ?= python3
PYTEST_ARGS ?=

VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Test-only packages installed without their requirements (pyproject.toml's dev list says why).
NO_DEPS_DEV := invisible-watermark==0.2.0

.PHONY: run test install tiny-model node-deps redis-deps browser-deps gpu-wheels bench bench-api \
	bench-provenance clean

# Reinstall only when the pinned dependencies change, so a second `make run` starts in seconds.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps $(NO_DEPS_DEV)
	touch $(STAMP)

install: $(STAMP)

$(TINY_STAMP): | $(STAMP)
	rm -rf $(MODEL) $(REDUX)
	$(PY) -m fluxserve make-tiny-model $(MODEL) --redux $(REDUX)
	touch $(TINY_STAMP)

tiny-model: $(TINY_STAMP)

run: $(STAMP) $(TINY_STAMP)
	$(PY) -m fluxserve serve --host $(HOST) --port $(PORT) --tls-port $(TLS_PORT) \
		--data-dir $(DATA_DIR) --model $(MODEL) --redux-model $(REDUX)

# The real @fal-ai/client for the JS client tests (Node from Debian if the machine has none).
JS_DIR := tests/js
$(JS_DIR)/node_modules/.installed: $(JS_DIR)/package.json
	scripts/install-node-deps.sh $(JS_DIR)

node-deps: $(JS_DIR)/node_modules/.installed

# redis-server for the scale-out tests (Debian's package, when missing).
redis-deps:
	scripts/install-redis.sh

# Debian's Chromium for the playground test (when missing).
browser-deps:
	scripts/install-browser.sh

test: $(STAMP) node-deps redis-deps browser-deps
	$(PY) -m pytest $(PYTEST_ARGS)

# Wheels a bare CUDA machine (PyTorch, Python 3.12, no internet) lacks, for benchmarks/gpu.sh. Not
# huggingface_hub: 2.x imports httpx2, which that machine lacks, and its own 1.33 (like its tokenizers 0.23.2)
# meets these wheels' requirements; tests/unit/test_gpu_wheels.py checks them against
# benchmarks/gpu_machine.txt.
# .whl/ is emptied first: gpu.sh installs every wheel in it, and a stale second version stops the install.
GPU_WHEELS := diffusers==0.42.1 transformers==5.24.0 torchao==0.18.0
gpu-wheels: $(STAMP)
	rm -rf .whl
	$(PY) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl $(GPU_WHEELS)

# The CPU engine benchmark on the tiny model (the GPU one: benchmarks/gpu.sh).
bench: $(STAMP) $(TINY_STAMP)
	$(PY) benchmarks/bench_engine.py --model $(MODEL)

# The API against its framework, both stores, 10^5 queued jobs, two nodes (docs/performance.md, "API overhead"):
# 4-5 minutes on 2 cores; api.json and api.md in benchmarks/results/api/. BENCH_API_ARGS="--src ../old" for
# a "before" tree, "--quick" for a smoke run.
BENCH_API_ARGS ?=
bench-api: $(STAMP) redis-deps
	$(PY) benchmarks/bench_api.py --out benchmarks/results/api $(BENCH_API_ARGS)

# The provenance stage per mark on one CPU core, against the image's own encoding, and the watermark's
# survival and false positives (about a minute); provenance.json and provenance.md in benchmarks/results/.
bench-provenance: $(STAMP)
	$(PY) benchmarks/bench_provenance.py --out benchmarks/results/provenance

clean:
	rm -rf $(VENV) $(DATA_DIR)
