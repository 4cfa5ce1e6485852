#!/usr/bin/env bash
# Start a local Redis on 127.0.0.1:6379 unless one already answers.
set -euo pipefail
if python3 - <<'PY' 2>/dev/null
import socket; s = socket.create_connection(("127.0.0.1", 6379), timeout=1); s.sendall(b"PING\r\n")
assert s.recv(16).startswith(b"+PONG")
PY
then echo "redis: already running"; exit 0; fi
redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
  --dir /tmp --logfile /tmp/prototok-redis.log
for _ in $(seq 50); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && { echo "redis: started"; exit 0; }; sleep 0.1; done
echo "redis: failed to start (see /tmp/prototok-redis.log)" >&2; exit 1
