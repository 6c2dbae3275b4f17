#!/usr/bin/env bash
# One command: set up (pebble and nginx from Debian, a virtualenv) and run every check:
# ruff lint, ruff format, the layer contracts (import-linter), and the whole pytest suite
# (unit and end-to-end against pebble, nginx and redis).
set -euo pipefail
cd "$(dirname "$0")/.."
# pebble: the CA; nginx-light: deploy tests; prometheus: promtool for the alert-rule tests;
# systemd: systemd-analyze for the unit tests; redis-server: fleet-mode tests; faketime:
# libfaketime, to step the wall clock under a running daemon.
scripts/bootstrap.sh pebble nginx-light prometheus systemd redis-server faketime
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports --no-cache
.venv/bin/pytest "$@"
