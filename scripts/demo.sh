#!/usr/bin/env bash
# One command: set up (pebble from Debian, a virtualenv) and run the whole job against a
# local pebble CA on loopback: register with EAB, obtain a certificate, write and show it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh pebble
exec .venv/bin/acme-agent demo "$@"
