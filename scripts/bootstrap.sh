#!/usr/bin/env bash
# Install what acme-agent needs on a Debian machine: apt packages (given as arguments,
# installed only when missing) and a virtualenv in .venv with the agent and its test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)

missing=()
for pkg in "$@"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then missing+=(python3-venv); fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]} from Debian"
  "${sudo_cmd[@]}" apt-get update -qq
  # The tests start their own nginx and pebble on loopback; keep the packages' services
  # (nginx on port 80, prometheus on 9090) from starting during the install.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo_cmd[@]}" tee "$policy" >/dev/null
    "${sudo_cmd[@]}" chmod +x "$policy"
    trap '"${sudo_cmd[@]}" rm -f '"$policy" EXIT
  fi
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "bootstrap: acme-agent needs Python 3.11 or newer" >&2; exit 1; }
[ -x .venv/bin/python ] || python3 -m venv .venv
# editable_mode=compat: a plain path entry in a .pth file, where the default mode installs
# an import hook that costs every start of acme-agent ~15 ms.
.venv/bin/pip install -q --disable-pip-version-check --config-settings editable_mode=compat \
  -e '.[test]'
# Byte-compile our modules now (as installing a wheel does): where PYTHONDONTWRITEBYTECODE
# is set, every start would otherwise compile them again.
.venv/bin/python -m compileall -q agent >/dev/null
