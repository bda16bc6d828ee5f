#!/usr/bin/env bash
# The whole test suite. Installs what it needs first (scripts/tools.sh:
# terraform, tofu, vault, redis-server, chromium — cached after the first
# run), then vets and runs every test with the race detector.
#
# The demo (cmd/twokey/demo.go and demo_test.go) is built only with the build
# tag demo; nothing else depends on the tag. So both builds are vetted, the
# suite runs once with the tag, and the production build's own test (its
# `twokey demo` refuses) runs without it.
#
# Extra arguments go to `go test`, e.g. scripts/test.sh -run TestPlanApproveApply.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export GOTOOLCHAIN=local
bash scripts/tools.sh
go vet ./...
go vet -tags demo ./...
go test -race -count=1 -timeout 30m -tags demo "$@" ./...
go test -count=1 -run '^TestDemoNotBuilt$' ./cmd/twokey
