# Crops: the two commands are `make up` and `make test`. Every target is thin;
# the scripts under tests/ and cross/ explain themselves.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules

ROOT := $(CURDIR)
MUSL := x86_64-unknown-linux-musl
ARM64 := aarch64-unknown-linux-musl
TARGET := $(or $(CARGO_TARGET_DIR),$(ROOT)/target)
AGENT_STATIC := $(TARGET)/$(MUSL)/agent/crops-agent
AGENT_ARM64 := $(TARGET)/$(ARM64)/agent/crops-agent
ORCHESTRATOR := $(TARGET)/debug/crops-orchestrator
export CONTAINERS_CONF := $(ROOT)/tests/podman/containers.conf
export CROPS_TEST_IMAGE := localhost/crops-test/busybox:latest

help: ## list targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

deps: ## install what is missing (Debian packages, rustup targets); changes nothing under /etc
	@tests/deps.sh

image: ## build the local test image with podman import (no registry)
	@tests/podman/image.sh

policies: ## the stock policy components the orchestrator embeds (policies/dist/*.wasm)
	@policies/build.sh

policy-examples: ## the Python/JS example policies (policies/dist/examples/; downloads componentize-py and componentize-js once)
	@policies/examples/build.sh

build: policies ## one dev build of every crate and test
	cargo build --workspace --all-targets

agent-static: ## the static x86_64 musl agent, with its size
	cargo build -p crops-agent --profile agent --target $(MUSL)
	@file $(AGENT_STATIC) | grep -q 'static' || { file $(AGENT_STATIC); echo "not static" >&2; exit 1; }
	@echo "$(AGENT_STATIC): $$(stat -c %s $(AGENT_STATIC)) bytes; $$(file -b $(AGENT_STATIC))"

agent-arm64: ## the static aarch64 musl agent, with its size
	cargo build -p crops-agent --profile agent --target $(ARM64)
	@echo "$(AGENT_ARM64): $$(stat -c %s $(AGENT_ARM64)) bytes; $$(file -b $(AGENT_ARM64))"

test: deps image policies policy-examples agent-static agent-arm64 ## install what is missing, then run every test
	cargo build --workspace --bins
	CROPS_AGENT_BIN=$(AGENT_STATIC) CROPS_AGENT_ARM64_BIN=$(AGENT_ARM64) CROPS_ORCHESTRATOR_BIN=$(ORCHESTRATOR) \
		cargo test --workspace --lib --bins --tests
	cargo test --workspace --doc
	cd policies && cargo test -p crops-policy-core --lib

lint: policies ## formatting and clippy, as CI would want them
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cd policies && cargo fmt --all --check && cargo clippy --workspace --all-targets -- -D warnings

up: deps image policies agent-static ## build, start an orchestrator and a local agent, print what next
	@tests/up.sh

down: ## stop what `make up` started
	@tests/up.sh down

replicas: deps image policies agent-static ## three orchestrators on PostgreSQL behind HAProxy and a local agent, print what next
	@tests/replicas.sh

replicas-down: ## stop what `make replicas` started
	@tests/replicas.sh down

bench: deps image policies policy-examples agent-static agent-arm64 ## the benchmarks recorded in BENCHMARKS.md
	@tests/bench.sh
	cargo build --release --workspace --bins
	CROPS_AGENT_BIN=$(AGENT_STATIC) CROPS_ORCHESTRATOR_BIN=$(TARGET)/release/crops-orchestrator \
		CROPS_BENCH_N=100 CROPS_BENCH_REPLICAS=1 cargo bench --workspace --bench lifecycle_latency
	CROPS_AGENT_BIN=$(AGENT_STATIC) CROPS_ORCHESTRATOR_BIN=$(TARGET)/release/crops-orchestrator \
		cargo bench --workspace --bench terminal
	CROPS_AGENT_BIN=$(AGENT_STATIC) CROPS_ORCHESTRATOR_BIN=$(TARGET)/release/crops-orchestrator \
		cargo bench --workspace --bench egress
	ulimit -n $$(ulimit -Hn); CROPS_ORCHESTRATOR_BIN=$(TARGET)/release/crops-orchestrator \
		cargo bench --workspace --bench dashboard
	CROPS_NO_BUILD=1 CROPS_FLEET_HOLD_SECS=30 CROPS_ORCHESTRATOR_BIN=$(TARGET)/release/crops-orchestrator tests/bench-fleet.sh
	taskset -c 0 cargo bench --workspace --bench policy

.PHONY: help deps image policies policy-examples build agent-static agent-arm64 test lint up down replicas replicas-down bench
