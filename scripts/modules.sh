#!/usr/bin/env bash
# Prints the nested Go modules of the repository, one directory a line,
# relative to its root: every folder below the root with a go.mod of its own
# (deploy, dashboards, web/browsertest, internal/testenv/containers, …). They
# keep validation-only dependencies out of clickrec's go.mod, and `go test ./...`
# at the root does not descend into them: scripts/test.sh and the lint task
# run each one with `go -C <dir>`.
set -euo pipefail
cd "$(dirname "$0")/.."
find . -mindepth 2 -name go.mod \
  -not -path '*/.*/*' -not -path '*/testdata/*' -not -path '*/node_modules/*' \
  -not -path './out/*' -not -path './bin/*' -not -path './data/*' \
  -printf '%h\n' | sed 's|^\./||' | LC_ALL=C sort
