#!/usr/bin/env bash
# The package on Python 3.12: installed from pyproject.toml (newest versions its ranges allow, not
# the 3.11 lock) into .venv-py312, then the tests that install the wheel and export with it, the
# Python API's real exports and the request contract. The full suite runs on 3.11 (make test): both
# interpreters run the same code, and the full suite twice would double CI's time.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON312:-python3.12}
# A pyenv shim exists even where 3.12 is not among pyenv's selected versions: ask pyenv for it then.
if ! "$python" --version >/dev/null 2>&1 && command -v pyenv >/dev/null; then
  # (the list read whole first: grep -m1 on a pipe would end pyenv by SIGPIPE, a failure under pipefail)
  versions="$(pyenv versions --bare)"
  python="$(pyenv root)/versions/$(grep -m1 '^3\.12' <<<"$versions")/bin/python"
fi
if ! "$python" --version >/dev/null 2>&1; then
  echo "test-py312: Python 3.12 is required (set PYTHON312 to its interpreter)" >&2
  exit 1
fi
stamp=".venv-py312/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  [ -x .venv-py312/bin/python ] || "$python" -m venv .venv-py312
  # The 3.11 lock as constraints: the same versions where they exist for 3.12 (an open resolve
  # backtracked through dozens of kombu releases to one that no longer builds).
  .venv-py312/bin/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
  rm -f .venv-py312/.installed-*
  touch "$stamp"
fi
.venv-py312/bin/python -m pytest -p no:cacheprovider tests/test_packaging.py tests/test_api.py tests/test_request.py tests/test_formats.py
