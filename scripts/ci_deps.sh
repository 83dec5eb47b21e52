#!/usr/bin/env bash
# Install the system packages the tests need: Debian's chromium and chromium-driver (browser
# test), postgresql and redis-server (the scaling tests' real servers, tests/scale_servers.py).
# Safe to rerun: installs only what is missing. Needs root (or sudo) and apt.
set -euo pipefail
PKGS=()
{ command -v chromium >/dev/null && command -v chromedriver >/dev/null; } || PKGS+=(chromium chromium-driver)
{ command -v initdb >/dev/null || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; } || PKGS+=(postgresql)
command -v redis-server >/dev/null || PKGS+=(redis-server)
if [ ${#PKGS[@]} -eq 0 ]; then
  echo "chromium, chromedriver, postgresql and redis-server already installed"
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${PKGS[@]}"
chromium --version
chromedriver --version
