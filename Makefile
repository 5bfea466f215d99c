# coopcloud.ci — every target sets up what it needs and is safe to run twice.
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
BIN   := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
export ANSIBLE_CONFIG := $(abspath ansible.cfg)

.PHONY: help venv host test unit integration molecule lint docs build demo demo-pr verify bench clean

help:
	@echo "make test    the whole suite (sets up docker, swarm, images, virtualenv)"
	@echo "make demo    the main job on the bundled example recipe"
	@echo "make demo-pr a PR comment to a verdict on the PR (!testme, !testme --quick, a fork)"
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
	$(BIN)/ruff check plugins tests bench bench/snapshot scripts bin bin/ccci scripts/demo scripts/demo-pr scripts/gen-reference scripts/verify bench/lanes bench/bridge
	$(BIN)/ruff format --check plugins tests bench bench/snapshot bin bin/ccci scripts/demo scripts/demo-pr scripts/gen-reference scripts/verify bench/lanes bench/bridge
	$(BIN)/ansible-lint -q playbooks roles extensions docs/drone.example.yml
	$(PY) scripts/gen-reference --check

docs: venv
	$(PY) scripts/gen-reference

molecule: venv
	$(BIN)/molecule test --all

unit: venv
	$(BIN)/pytest tests/unit

integration: venv host
	$(BIN)/pytest tests/integration

test: venv host lint
	$(BIN)/pytest tests
	$(BIN)/molecule test --all

build: venv
	mkdir -p .build
	$(BIN)/ansible-galaxy collection build --force --output-path .build .

demo: venv host
	$(PY) scripts/demo

demo-pr: venv host
	$(PY) scripts/demo-pr

verify: venv host
	$(PY) scripts/verify

bench: venv host
	$(PY) bench/snapshot
	$(PY) bench/lanes
	$(PY) bench/bridge

clean:
	rm -rf .build .pytest_cache .ruff_cache
