#!/usr/bin/env bash
# Set up and run the whole test suite: lint, type check, unit and integration tests.
# As root (as CI runs it) the tests on real sshd test hosts must run: none may skip.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

echo "== ruff"
.venv/bin/ruff check mk8s tests bench scripts
.venv/bin/ruff format --check mk8s tests bench
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
if [ "$(id -u)" -eq 0 ]; then
  export MK8S_REQUIRE_HOSTS=1
fi
set +e
.venv/bin/python -m pytest -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$rc"
