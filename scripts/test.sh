#!/usr/bin/env bash
# The whole test suite. Installs what it needs first (scripts/tools.sh:
# terraform, tofu, vault, redis-server, chromium — cached after the first
# run), then vets and runs every test with the race detector.
#
# Extra arguments go to `go test`, e.g. scripts/test.sh -run TestPlanApproveApply.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export GOTOOLCHAIN=local
bash scripts/tools.sh
go vet ./...
go test -race -count=1 -timeout 30m "$@" ./...
