#!/usr/bin/env bash
# Install acme-agent on a Debian-style host in one command (idempotent: run it again to
# upgrade; an existing configuration is never overwritten):
#
#   /opt/acme-agent/                 its own virtualenv (no pip into the system Python:
#                                    Debian 12/13 refuse that, PEP 668)
#   /usr/local/bin/acme-agent        a link to the virtualenv's console script
#   /etc/acme-agent/                 0750; agent.toml (0600) from config/agent.example.toml
#   /etc/acme-agent/certs.d/         0750, for one TOML file per certificate
#   /var/lib/acme-agent/             0700, the state
#   /usr/local/lib/systemd/system/   acme-agent.service, acme-agent-renew.{service,timer}
#                                    (yours to override in /etc/systemd/system: never touched)
#
# Usage: scripts/install.sh [--root DIR] [--no-systemctl]
#   --root DIR       install under DIR instead of / (a staging tree; the tests use it)
#   --no-systemctl   do not run `systemctl daemon-reload` (implied with --root)
# Nothing is enabled or started: see README "Quick start on a host".
set -euo pipefail
cd "$(dirname "$0")/.."
source_dir=$(pwd)

root=""
systemctl=1
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root=$(realpath -m "$2"); systemctl=0; shift 2 ;;
    --root=*) root=$(realpath -m "${1#--root=}"); systemctl=0; shift ;;
    --no-systemctl) systemctl=0; shift ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

if [ -z "$root" ] && [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run as root (or with --root DIR for a staging tree)" >&2
  exit 2
fi
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "install.sh: acme-agent needs Python 3.11 or newer (python3 is $(python3 -V))" >&2
  exit 1
}
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: python3-venv is missing: apt-get install python3-venv" >&2; exit 1
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
fi

umask 022
venv="$root/opt/acme-agent"
echo "install.sh: the agent into $venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check --upgrade "$source_dir"
"$venv/bin/python" -m compileall -q "$venv/lib" >/dev/null || true

install -d -m 0755 "$root/usr/local/bin"
ln -sfn "$venv/bin/acme-agent" "$root/usr/local/bin/acme-agent"

# Folders get their mode when created; an existing one keeps what the operator gave it.
new_dir() { [ -d "$2" ] || install -d -m "$1" "$2"; }
new_dir 0750 "$root/etc/acme-agent"
new_dir 0750 "$root/etc/acme-agent/certs.d"
if [ ! -e "$root/etc/acme-agent/agent.toml" ]; then
  install -m 0600 config/agent.example.toml "$root/etc/acme-agent/agent.toml"
  echo "install.sh: wrote $root/etc/acme-agent/agent.toml (edit it: config/*.toml are examples)"
else
  echo "install.sh: kept the existing $root/etc/acme-agent/agent.toml"
fi
new_dir 0700 "$root/var/lib/acme-agent"

units="$root/usr/local/lib/systemd/system"
install -d -m 0755 "$units"
for unit in systemd/*.service systemd/*.timer; do
  install -m 0644 "$unit" "$units/$(basename "$unit")"
done
if [ "$systemctl" -eq 1 ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  # A running daemon keeps the code it started with, while its workers would start the
  # new one: restart it (only if it runs) so that both speak the same worker protocol.
  systemctl try-restart acme-agent.service || true
fi
echo "install.sh: done; $("$venv/bin/acme-agent" --version)"
