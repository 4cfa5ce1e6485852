#!/usr/bin/env bash
# The README's test command: install everything, make sure Redis is up, run all tests
# (unit tests on tiny random models + integration tests on the embedded SmolLM2,
# the real Redis, a real RQ worker and the real API). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
bash scripts/redis_up.sh
if [ -x scripts/check_docker.sh ] || [ -f scripts/check_docker.sh ]; then bash scripts/check_docker.sh; fi
python -m pytest -q -p no:cacheprovider "$@"
