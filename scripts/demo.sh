#!/usr/bin/env bash
# The demo: the whole plan → two approvals → apply flow on this machine, in a
# local Slack-like web page. Installs terraform and vault the way the tests do
# (built once, then cached), builds twokey with the build tag demo (the
# production binary has no demo), and runs `twokey demo`.
# Arguments go to `twokey demo` (e.g. --listen 127.0.0.1:8080, --redis-url …).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export GOTOOLCHAIN=local
bash scripts/tools.sh terraform vault bwrap
go build -tags demo -o .tools/bin/twokey ./cmd/twokey
exec .tools/bin/twokey demo "$@"
