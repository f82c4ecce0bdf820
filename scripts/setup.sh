#!/usr/bin/env bash
# Installs the project into .venv inside the checkout, exactly as requirements.lock says.
# Safe to run again: a stamp named by the lock file's hash skips work already done.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "setup: Python 3.11 is required (the lock file is resolved for it); found $("$python" --version)" >&2
  exit 1
fi

# Debian packages the tests and benchmarks use: headless Chromium (browser checks), the Docker
# engine, the OCI registry, skopeo (an independent registry client), a static busybox (a small base
# image), htpasswd (a registry that wants credentials), bubblewrap (the export sandbox) and an OpenSSH server
# (the benchmark's SSH device target is tested against a real sshd on loopback).
missing=""
for pair in chromium:/usr/bin/chromium docker.io:/usr/sbin/dockerd docker-registry:/usr/bin/docker-registry skopeo:/usr/bin/skopeo \
            busybox-static:/bin/busybox apache2-utils:/usr/bin/htpasswd bubblewrap:/usr/bin/bwrap \
            openssh-server:/usr/sbin/sshd; do
  [ -x "${pair#*:}" ] || missing="$missing ${pair%%:*}"
done
# libseccomp: the export sandbox's system call filter (loaded through pyseccomp).
[ -e "/usr/lib/$(uname -m)-linux-gnu/libseccomp.so.2" ] || missing="$missing libseccomp2"
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
  else
    echo "setup: missing Debian packages (sudo apt-get install$missing): their tests will fail" >&2
  fi
fi

# The JavaScript runtimes tf_js exports are verified in (Node.js 20 comes with the machine).
if ! command -v node >/dev/null; then
  echo "setup: Node.js is required (tf_js verification); install Node.js 20" >&2
  exit 1
fi
js_stamp="node_modules/.installed-$(cat package-lock.json | sha256sum | cut -c1-16)"
if [ ! -f "$js_stamp" ]; then
  npm ci --no-audit --no-fund --loglevel=error
  touch "$js_stamp"
fi

stamp=".venv/.installed-$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  [ -x .venv/bin/python ] || "$python" -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
  rm -f .venv/.installed-*
  touch "$stamp"
fi
