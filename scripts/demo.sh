#!/usr/bin/env bash
# Sets up the package, serves the bundled demo cluster (examples/demo-cluster.yaml) on 127.0.0.1 and
# shows a filter and a prioritize call as kube-scheduler makes them, then the verdicts on pending pods.
# Stops the extender it started (by its pid) on exit. Listens on port 8888, or on $PORT: PORT=8899 scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --demo
export PATH="$PWD/.venv/bin:$PATH"
PORT="${PORT:-8888}"
if ! python -c 'import socket, sys; socket.create_server(("127.0.0.1", int(sys.argv[1]))).close()' "$PORT" 2>/dev/null; then
  echo "demo: port $PORT on 127.0.0.1 is in use (another demo still running?); choose another: PORT=8899 $0" >&2
  exit 2
fi
LOG="$(mktemp -t mig-extender-demo.XXXXXX.log)"
mig-extender serve --snapshot examples/demo-cluster.yaml --host 127.0.0.1 --port "$PORT" --pending-scan-s 1 \
  >"$LOG" 2>&1 &
PID=$!
trap 'kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
  kill -0 "$PID" 2>/dev/null || { cat "$LOG"; exit 1; }
  sleep 0.2
done
POD='{"metadata":{"name":"vision-3","namespace":"ml","uid":"demo-1"},"spec":{"containers":[{"name":"main","resources":{"limits":{"nvidia.com/mig-3g.40gb":"1"}}}]}}'
NODES='["a100-balanced","h100-balanced","h100-inference","h100-idle-3g","h100-exact","h200-balanced"]'
echo "== POST /filter (a pod asking for one nvidia.com/mig-3g.40gb)"
curl -fsS -XPOST "http://127.0.0.1:$PORT/filter" -H 'Content-Type: application/json' \
  -d "{\"Pod\":$POD,\"Nodes\":null,\"NodeNames\":$NODES}" | python -m json.tool
echo "== POST /prioritize (the nodes that passed)"
curl -fsS -XPOST "http://127.0.0.1:$PORT/prioritize" -H 'Content-Type: application/json' \
  -d "{\"Pod\":$POD,\"Nodes\":null,\"NodeNames\":[\"h100-balanced\",\"h100-inference\",\"h100-idle-3g\",\"h100-exact\"]}" \
  | python -m json.tool
sleep 1.5
echo "== verdicts for the pending pods (from the extender's log)"
grep -E "verdict for|event" "$LOG" || true
echo "== a few metrics"
curl -fsS "http://127.0.0.1:$PORT/metrics" | grep -E "^mig_extender_(filter_node_outcomes|pending_demand)" || true
