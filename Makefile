# `make demo` and `make test` are the two entry points (see README.md).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
STAMP := $(VENV)/.installed
NODE_STAMP := tests/conformance/node_modules/.installed
PYTEST_ARGS ?=

.PHONY: test demo bench soak lint typecheck pytest system-deps node-deps venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	test -x $(UV) || $(VENV)/bin/pip install --quiet uv
	$(UV) pip install --quiet --python $(PY) -e '.[dev]'
	touch $(STAMP)

# Debian's chromium (the browser tests) and redis-server (the multi-process channel layer tests).
system-deps:
	@if ! command -v chromium >/dev/null || ! command -v redis-server >/dev/null; then \
		echo "Installing chromium and redis-server from Debian's packages"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium redis-server >/dev/null; \
	fi

# The official Trigger.dev SDK, the conformance peer of the emulator and the client.
node-deps: $(NODE_STAMP)

$(NODE_STAMP): tests/conformance/package.json tests/conformance/package-lock.json
	cd tests/conformance && npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy

pytest: venv system-deps node-deps
	PYTHONDEVMODE=1 $(VENV)/bin/pytest -W error::DeprecationWarning $(PYTEST_ARGS)

test: venv system-deps node-deps lint typecheck pytest

demo: venv
	$(PY) -m example_project.demo

# The client readers (bench/run.py), then the whole pipeline (bench/pipeline.py: emulator ->
# daphne -> viewers). BENCH_ARGS is passed to the pipeline, e.g. BENCH_ARGS="--scenario 3 --quick".
# Then the server-side markdown: per-flush render cost (bench/markdown_render.py) and per-part
# cost in the hub (bench/markdown_feed.py), and Chromium main-thread time while it streams
# (bench/markdown_browser.py), at 1, 10 and 100 KB answers; and daphne's CPU for 100 viewers of
# one markdown stream vs one viewer (bench/markdown_fanout.py: real daphne, sockets, emulator).
BENCH_ARGS ?=
# The short, CPU-only benchmarks first; the pipeline (real processes, ~6 min) last.
bench: venv node-deps
	$(PY) -m bench.run
	$(PY) -m bench.markdown_render
	$(PY) -m bench.markdown_feed
	$(PY) -m bench.markdown_browser
	$(PY) -m bench.markdown_fanout
	$(PY) -m bench.pipeline $(BENCH_ARGS)

# The soak of `make test` (tests/e2e/test_soak.py), for SOAK_SECONDS of cycles (default 600).
SOAK_SECONDS ?= 600
soak: venv
	SOAK_SECONDS=$(SOAK_SECONDS) PYTHONDEVMODE=1 $(VENV)/bin/pytest -W error::DeprecationWarning \
		tests/e2e/test_soak.py -m soak -x -q -s $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) tests/conformance/node_modules .pytest_cache .mypy_cache .ruff_cache
