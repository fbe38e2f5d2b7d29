# The two commands in the README: `make demo` (main job on the shipped sample) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST

.PHONY: setup demo test lint bench

setup:
	@bash scripts/setup_env.sh

demo: setup
	@bash scripts/demo.sh

test: setup
	@$(PY) -m ruff check .
	@$(PY) -m pytest -q

lint: setup
	@$(PY) -m ruff check .

bench: setup
	@bash scripts/bench.sh
