# Roomcast: the two commands a newcomer needs are `make run` and `make test`.
# Each target installs what it needs (npm packages from lockfiles, control-plane binaries
# into a cache outside the checkout) so they work on a fresh machine.

SHELL := /bin/bash
.DEFAULT_GOAL := help

.PHONY: help run test test-rust test-dataplane-js test-sdk test-clients test-operator test-discovery test-e2e lint bench
.PHONY: fuzz test-fuzz-corpus images

help:
	@echo "make run    - start a single-node hub on http://127.0.0.1:3000 (embedded default config)"
	@echo "make test   - run the whole test suite (installs what the tests need)"
	@echo "make bench  - run the benchmarks and rewrite docs/benchmarks.md"
	@echo "make fuzz   - run each fuzz target for FUZZ_SECONDS (default 20; docs/fuzzing.md)"
	@echo "make images - build the data-plane and operator images with docker or podman (docs/operator.md)"

run:
	cargo run --release -p roomcast-dataplane --bin roomcast-dataplane

# The whole suite; .ci/run calls exactly this. Every tier must run: a tier that cannot run fails.
test: lint test-rust test-fuzz-corpus test-dataplane-js test-sdk test-clients test-operator test-discovery test-e2e

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	bash scripts/lint-shell.sh
	bash scripts/lint-workflows.sh
	bash scripts/lint-dockerfiles.sh
	bash scripts/check-monitoring.sh

test-rust:
	cargo test --workspace --locked

# The fuzz targets' committed inputs (dataplane/fuzz/seeds/, crashes of older code among them)
# replayed through the same target logic, uninstrumented: a plain test, in test-rust's build.
test-fuzz-corpus:
	cargo test --workspace --locked --test fuzz_corpus

test-dataplane-js:
	bash dataplane/tests/js/run.sh

# The Node SDK (sdk/node: the socket.io API suite standalone and through a 3-node hub, with
# socket.io 4.8 and 4.7) and the sio-chat example's page in headless Chromium.
test-sdk:
	bash sdk/node/test/run.sh
	bash examples/sio-chat/test/run.sh

# Stock clients beyond Node against a 3-node hub behind the round-robin proxy: socket.io-client
# in headless Chromium, python-socketio (Client, AsyncClient), socket.io-client-java,
# rust_socketio; installs each (pinned, cached outside the checkout) and checks the generated
# table of docs/clients.md (see that page).
test-clients:
	bash e2e/clients/run.sh

test-operator:
	bash e2e/operator-tests.sh

# Hub peer discovery through EndpointSlices against a real kube-apiserver (same cached
# control-plane binaries as test-operator; about 30 s once built).
test-discovery:
	bash e2e/discovery-tests.sh

# Full path on the local control plane, in a network namespace of its own: the chart, the
# operator, the real StatefulSet and EndpointSlice controllers, hub pods run as local
# processes by e2e/pod-runner, the example app, and the scenarios of e2e/scenarios/ (shared
# with e2e/kind/) (about 2-3 min warm).
test-e2e:
	bash e2e/pod-runner-tests.sh

bench:
	bash bench/run.sh

# The data-plane and operator images, tagged $(REGISTRY)/roomcast-*:<appVersion> (default
# ghcr.io/roomcast); PLATFORMS=linux/amd64,linux/arm64 PUSH=1 for a multi-arch push (scripts/images.sh).
images:
	bash scripts/images.sh

# Coverage-guided fuzzing on the stable toolchain (cargo-fuzz, libFuzzer, no sanitizer): builds
# the targets of dataplane/fuzz/ instrumented, then runs each for FUZZ_SECONDS (default 20).
fuzz:
	bash scripts/fuzz.sh
