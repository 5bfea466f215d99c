# coopcloud.ci — every target sets up what it needs and is safe to run twice.
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
BIN   := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
export ANSIBLE_CONFIG := $(abspath ansible.cfg)

.PHONY: help venv host test check unit integration molecule lint docs build demo verify bench clean

# pytest-xdist: worker processes, and tests of one xdist_group on one worker (tests that
# share a module-scoped set-up, or act on something host-wide). The suite waits mostly on
# the Docker engine, so more workers than cores pays.
XDIST ?= -n 3 --dist loadgroup
# The smoke test of make check: real plays, the settings from an inventory, no swarm.
SMOKE ?= tests/integration/test_inventory_settings.py

help:
	@echo "make test    the whole suite (sets up docker, swarm, images, virtualenv)"
	@echo "make check   the everyday tier: lint, unit tests and one smoke test (minutes)"
	@echo "make demo    the main job on the bundled example recipe"
	@echo "make verify  prove the whole chain on the real swarm, item by item (WC9)"
	@echo "make bench   benchmarks (figures go into README.md by hand)"
	@echo "make lint    ruff and ansible-lint"
	@echo "make build   ansible-galaxy collection build into .build/"
	@echo "make docs    regenerate docs/reference/ from the modules' DOCUMENTATION"

$(VENV)/.stamp: requirements.txt requirements-test.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-test.txt
	touch $@

venv: $(VENV)/.stamp

host:
	scripts/setup-host

lint: venv
	$(BIN)/ruff check plugins tests bench bench/snapshot scripts bin bin/ccci scripts/demo scripts/gen-reference scripts/verify bench/lanes
	$(BIN)/ruff format --check plugins tests bench bench/snapshot bin bin/ccci scripts/demo scripts/gen-reference scripts/verify bench/lanes
	$(BIN)/ansible-lint -q playbooks roles extensions docs/drone.example.yml
	$(PY) scripts/gen-reference --check

docs: venv
	$(PY) scripts/gen-reference

molecule: venv
	$(BIN)/molecule test --all

unit: venv
	$(BIN)/pytest -n 2 tests/unit

# The unit tests marked slow (they run plays, ansible-doc or many processes) are left to
# make test.
check: venv lint
	$(BIN)/pytest -q -n 2 -m "not slow" tests/unit $(SMOKE)

integration: venv host
	$(BIN)/pytest tests/integration

# molecule's quick scenario proves what tests/integration/test_quick_lane.py's quick PASS
# already does (the known-good unmoved, byte for byte): make molecule runs it, make test
# runs the ci_host scenario only.
test: venv host lint
	$(BIN)/pytest $(XDIST) --durations=20 tests
	$(BIN)/molecule test -s ci_host

build: venv
	mkdir -p .build
	$(BIN)/ansible-galaxy collection build --force --output-path .build .

demo: venv host
	$(PY) scripts/demo

verify: venv host
	$(PY) scripts/verify

bench: venv host
	$(PY) bench/snapshot
	$(PY) bench/lanes

clean:
	rm -rf .build .pytest_cache .ruff_cache
