#!/usr/bin/env bash
# The README's first command: set up, start the whole service locally on the embedded
# SmolLM2 (Redis at PROTOTOK_REDIS_URL, started if it is local and down; one worker; the API),
# walk a real text through encode, job polling and decode (scripts/demo.py), then stop
# everything this script started. Extra arguments go to demo.py (--text "...", --max-steps N).
# API keys: with auth on (the default) the demo makes a key of its own (`prototok keys create`)
# and revokes it when done; PROTOTOK_AUTH=off runs the whole service as an open local sandbox.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
echo "demo: installing into .venv (about a minute the first time, seconds after that)"
bash scripts/install.sh
. .venv/bin/activate

LOGS=${PROTOTOK_DEMO_LOGS:-/tmp/prototok-demo}
mkdir -p "$LOGS"
export PROTOTOK_REDIS_URL=${PROTOTOK_REDIS_URL:-redis://127.0.0.1:6379/0}
# host and port of PROTOTOK_REDIS_URL: the Redis the demo probes, and starts when it is local and down
read -r REDIS_HOST REDIS_PORT < <(python -c "import os, urllib.parse as u; p = u.urlparse(os.environ['PROTOTOK_REDIS_URL']); print(p.hostname or '127.0.0.1', p.port or 6379)")
PIDS=()
STARTED_REDIS=0
KEY_NAME=""
cleanup() {
  for pid in "${PIDS[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "$KEY_NAME" ]; then prototok keys revoke "$KEY_NAME" 2>/dev/null || true; fi
  if [ "$STARTED_REDIS" = 1 ]; then redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

redis_answers() {  # redis-py reads the whole URL: password, TLS, database
  python -c "import os, redis; redis.Redis.from_url(os.environ['PROTOTOK_REDIS_URL'], socket_connect_timeout=2).ping()" 2>/dev/null
}
if redis_answers; then
  echo "demo: using the Redis at $PROTOTOK_REDIS_URL"
elif [[ "$REDIS_HOST" =~ ^(127\.0\.0\.1|localhost|::1)$ ]]; then
  command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir /tmp --logfile "/tmp/redis-demo-$REDIS_PORT.log"
  STARTED_REDIS=1
  for _ in $(seq 50); do redis_answers && break; sleep 0.1; done
  echo "demo: started Redis on $REDIS_HOST:$REDIS_PORT (stopped again at the end)"
else
  echo "demo: no Redis answers at $PROTOTOK_REDIS_URL, and it is not on this machine, so the demo cannot start it" >&2
  exit 1
fi

case "${PROTOTOK_AUTH:-on}" in
  off|false|0|no) echo "demo: PROTOTOK_AUTH=$PROTOTOK_AUTH: no API keys (open sandbox)" ;;
  *) KEY_NAME="demo-$(date +%s)-$$"
     PROTOTOK_API_KEY=$(prototok keys create "$KEY_NAME")
     export PROTOTOK_API_KEY
     echo "demo: made API key '$KEY_NAME' for this run (revoked at the end)" ;;
esac

PORT=${PROTOTOK_DEMO_PORT:-$(python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")}
python -m worker >"$LOGS/worker.log" 2>&1 &
PIDS+=($!)
uvicorn app.main:app --host 127.0.0.1 --port "$PORT" >"$LOGS/api.log" 2>&1 &
PIDS+=($!)
echo "demo: worker (pid ${PIDS[0]}) and API (pid ${PIDS[1]}, port $PORT) starting; logs in $LOGS"
echo "demo: waiting for the worker to load SmolLM2-135M (about 15 s; the very first load builds a cache: about a minute)"
T0=$SECONDS
for i in $(seq 900); do
  curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
  for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null || { echo "demo: a process died"; tail -20 "$LOGS"/*.log; exit 1; }; done
  [ "$i" = 900 ] && { echo "demo: not ready after 900 s"; tail -20 "$LOGS"/*.log; exit 1; }
  sleep 1
done
echo "demo: ready after $((SECONDS - T0)) s; the web page is at http://127.0.0.1:$PORT/ while the demo runs"
python scripts/demo.py --url "http://127.0.0.1:$PORT" "$@"
