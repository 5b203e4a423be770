#!/usr/bin/env bash
# The whole test suite, with nothing skipped for want of an install: installs what is
# missing (scripts/install.sh), then runs pytest. Extra arguments go to pytest.
# pytest's exit code 5 (no test collected) is a failure here.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export HF_HUB_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1 BATCHD_TESTS_REQUIRE_ALL=1
set +e
# Two workers (BATCHD_TEST_WORKERS): most tests wait on subprocesses, emulators and
# servers; the vLLM engine tests stay together on one worker (tests/conftest.py).
python3 -m pytest -q -p no:cacheprovider -n "${BATCHD_TEST_WORKERS:-2}" --dist loadgroup "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
