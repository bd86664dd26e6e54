#!/usr/bin/env bash
# Deletes the kind cluster made by e2e/kind/up.sh. Env: KIND_CLUSTER (default roomcast).
set -euo pipefail
kind delete cluster --name "${KIND_CLUSTER:-roomcast}"
