# The same commands for people and for CI. `make setup` is idempotent: the stamp file makes
# the second run a no-op unless one of the three pyproject.toml files changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.deltaroll-installed

.PHONY: setup demo test bench lint crds clean

setup: $(STAMP) .tools/bin/helm

$(STAMP): pyproject.toml operator/sandbox/pyproject.toml operator/demo/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU wheel of torch first: a looser requirement would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	# Everything for development in one resolve: the product with every image's extra and the
	# tools, the sandbox and the demo (distributions of their own, beside the product).
	$(BIN)/pip install --quiet -e '.[dev]' -e operator/sandbox -e operator/demo
	touch $(STAMP)

.tools/bin/helm: scripts/fetch_k8s_tools.py $(STAMP)
	$(BIN)/python scripts/fetch_k8s_tools.py .tools/bin

demo: setup
	$(BIN)/python -m deltaroll_demo

# Most of the suite's time is sandbox e2e tests waiting on processes (operator, kubelet, engines),
# so two workers share two cores well. A test file runs whole on one worker, in order (some build
# on the state the one before left in a module-scoped sandbox). TEST_WORKERS=0: one process.
# The 25 slowest tests are listed at the end: CI's time budget is spent there.
TEST_WORKERS ?= 2
test: setup
	PATH="$(CURDIR)/.tools/bin:$$PATH" $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile \
		--durations=25

bench: setup
	$(BIN)/python benchmarks/codec.py
	$(BIN)/python benchmarks/store.py
	$(BIN)/python benchmarks/rollout.py
	$(BIN)/python benchmarks/scale.py
	$(BIN)/python benchmarks/operator_load.py
	$(BIN)/python benchmarks/admission_policy.py
	# fleet.py shapes the bucket link with the kernel's tc in a network namespace of its own when
	# run as root with iproute2 (Debian: apt-get install iproute2), else with a token-bucket proxy.
	$(BIN)/python benchmarks/fleet.py --pods 4

lint: setup
	$(BIN)/ruff check operator tests benchmarks
	$(BIN)/ruff format --check operator tests benchmarks
	$(BIN)/mypy

crds: setup
	$(BIN)/deltaroll crds -o crds/
	cp crds/*.yaml charts/deltaroll/crds/

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache
