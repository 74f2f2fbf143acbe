# Everything the project needs is installed into .venv by these targets.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: install run test lint format clean vendor bench bench-profile bench-request-path bench-partitioning bench-view-indexes bench-slow-clients bench-engagement bench-realtime bench-viewer bench-search bench-import bench-workers bench-replicas mutation

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(INSTALLED)

install: $(INSTALLED)

run: $(INSTALLED)
	$(PY) -m insights_audit.dev.devserver

test: $(INSTALLED)
	$(PY) -m pytest

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

format: $(INSTALLED)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The viewer's third-party assets, from the npm registry at pinned versions, with their
# licences; committed, so neither `make run` nor an install needs Node.
UPLOT_VERSION := 1.6.32
VENDOR := insights_audit/viewer/static/vendor
vendor:
	rm -rf .data/npm && mkdir -p .data/npm $(VENDOR)/uplot
	cd .data/npm && npm pack --silent uplot@$(UPLOT_VERSION) && tar xzf uplot-$(UPLOT_VERSION).tgz
	cp .data/npm/package/dist/uPlot.iife.min.js .data/npm/package/dist/uPlot.min.css \
		.data/npm/package/LICENSE $(VENDOR)/uplot/
	echo "uplot $(UPLOT_VERSION) (npm), MIT" > $(VENDOR)/uplot/VERSION

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info

# BENCH_EVENTS (default 10000000) and BENCH_SECONDS (default 10): see BENCHMARKS.md.
bench: $(INSTALLED)
	$(PY) -m benchmarks.bench

# One request's Python CPU per endpoint, in process, without gunicorn or wrk; a cProfile of
# one endpoint with BENCH_REQUEST_PATH_PROFILE=name (benchmarks/request_path.py).
bench-request-path: $(INSTALLED)
	$(PY) -m benchmarks.request_path

# Where a gunicorn worker's CPU goes, per endpoint, sampled by py-spy (benchmarks/profile.py).
bench-profile: $(INSTALLED)
	$(PY) -m benchmarks.profile

# Converting an unpartitioned trail and retention at BENCH_EVENTS (benchmarks/partitioning.py).
bench-partitioning: $(INSTALLED)
	$(PY) -m benchmarks.partitioning

# A view's throughput with and without the search indexes, side by side on one database.
bench-view-indexes: $(INSTALLED)
	$(PY) -m benchmarks.view_indexes

# The engagement endpoints timed one request at a time (benchmarks/engagement.py).
bench-engagement: $(INSTALLED)
	$(PY) -m benchmarks.engagement

# How many trickling and stalled clients one instance survives (benchmarks/slow_clients.py).
bench-slow-clients: $(INSTALLED)
	$(PY) -m benchmarks.slow_clients

# gunicorn's worker model (processes x threads) compared on the make bench database
# (benchmarks/workers.py).
bench-workers: $(INSTALLED)
	$(PY) -m benchmarks.workers

# Reads with and without a streaming replica of the make bench database (benchmarks/replicas.py).
bench-replicas: $(INSTALLED)
	$(PY) -m benchmarks.replicas

# `insights-audit import` of a 1M-document view log export (benchmarks/import_history.py).
bench-import: $(INSTALLED)
	$(PY) -m benchmarks.import_history

# The org-wide search on varied text, as the app role (benchmarks/search.py; needs make bench's
# database of BENCH_EVENTS).
bench-search: $(INSTALLED)
	$(PY) -m benchmarks.search

# Live tails beside the reads, and push stream delivery (benchmarks/realtime.py).
bench-realtime: $(INSTALLED)
	$(PY) -m benchmarks.realtime

# The viewer's first load against make run's server, in Chromium (benchmarks/viewer.py);
# BENCH_VIEWER_DOCS=1 also refreshes the README's screenshots in docs/.
bench-viewer: $(INSTALLED)
	$(PY) -m benchmarks.viewer $(if $(BENCH_VIEWER_DOCS),--docs,)

# Mutation testing of auth, idempotency, cursors, body schemas and the integrity package
# (slow; not in CI): MUTATION_MODULES=auth,idempotency limits it. See tools/mutation.py.
mutation: $(INSTALLED)
	$(PY) tools/mutation.py
