#!/usr/bin/env bash
# Start a two-node Ray cluster on this machine, no Docker: a head node and a worker node, each
# a separate raylet with its own CPUs and a custom resource naming it, so multi-node behaviour
# (tasks spread over nodes, objects moving between them, a node dying) shows up on a laptop.
#
#   infra/local/start_cluster.sh            # head: 1 CPU {"local_head": 1}
#                                           # worker: 2 CPUs {"local_worker": 1}
#   HYBRID_HEAD_CPUS=2 HYBRID_WORKER_CPUS=4 infra/local/start_cluster.sh
#
# Token authentication is ON by default (Ray >= 2.52; `ray start --head` warns without it):
# the token is RAY_AUTH_TOKEN, or the file RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token (created
# with `ray get-auth-token --generate` when none exists). RAY_AUTH_MODE=disabled turns it off.
# What clients need (RAY_AUTH_MODE, RAY_ADDRESS, RAY_API_SERVER_ADDRESS for `ray job`) is printed as `export`
# lines on stdout and saved to $HYBRID_LOCAL_DIR/ray.env for submit.sh.
#
# If start_s3.sh ran first, its AWS_* settings are loaded so the Ray workers inherit them.
# Stop everything with infra/local/stop.sh.
set -euo pipefail
# shellcheck source=infra/local/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

HEAD_CPUS="${HYBRID_HEAD_CPUS:-1}"
WORKER_CPUS="${HYBRID_WORKER_CPUS:-2}"
# The dashboard agent's HTTP port is fixed by default (52365): two nodes on one machine need two.
AGENT_PORT="${HYBRID_AGENT_PORT:-52465}"
# The head also serves Ray Client (ray://) on a fixed port.
CLIENT_PORT="${HYBRID_CLIENT_PORT:-10001}"

"$PYTHON" -c 'import ray' 2>/dev/null || hybrid_die "$PYTHON has no ray: $PYTHON -m pip install -e ."
"$PYTHON" -c 'import hybrid' 2>/dev/null \
    || hybrid_log "warning: $PYTHON cannot import hybrid (pip install -e . in the repo root)"
mkdir -p "$HYBRID_LOCAL_DIR" "$HYBRID_RAY_TMP"

if [ -f "$HYBRID_S3_ENV" ]; then
    # shellcheck disable=SC1090
    source "$HYBRID_S3_ENV"
    hybrid_log "using the local S3 endpoint $AWS_ENDPOINT_URL"
fi

# ---- authentication
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
case "$RAY_AUTH_MODE" in
    token)
        if [ -z "${RAY_AUTH_TOKEN:-}" ]; then
            if [ -n "${RAY_AUTH_TOKEN_PATH:-}" ]; then
                [ -s "$RAY_AUTH_TOKEN_PATH" ] || hybrid_die "RAY_AUTH_TOKEN_PATH=$RAY_AUTH_TOKEN_PATH is missing or empty"
            elif [ ! -s "$HOME/.ray/auth_token" ]; then
                ray_cli get-auth-token --generate >/dev/null
                hybrid_log "generated a Ray auth token in ~/.ray/auth_token"
            fi
        fi
        ;;
    disabled) hybrid_log "token authentication disabled (RAY_AUTH_MODE=disabled)" ;;
    *) hybrid_die "RAY_AUTH_MODE must be token or disabled, got $RAY_AUTH_MODE" ;;
esac

gcs="127.0.0.1:$HYBRID_RAY_PORT"
dashboard="http://127.0.0.1:$HYBRID_DASHBOARD_PORT"

if [ -f "$HYBRID_RAY_ENV" ] && ray_cli status --address "$gcs" >/dev/null 2>&1; then
    hybrid_log "a cluster is already running at $gcs (infra/local/stop.sh stops it)"
    cat "$HYBRID_RAY_ENV"
    exit 0
fi
for port in "$HYBRID_RAY_PORT" "$HYBRID_DASHBOARD_PORT" "$CLIENT_PORT" "$AGENT_PORT" "$((AGENT_PORT + 1))"; do
    port_is_free "$port" || hybrid_die "port $port is in use (another Ray?); set HYBRID_RAY_PORT / HYBRID_DASHBOARD_PORT / HYBRID_CLIENT_PORT / HYBRID_AGENT_PORT"
done

on_error() { hybrid_log "start failed; clean up with infra/local/stop.sh (logs: $HYBRID_RAY_TMP/session_latest/logs)"; }
trap on_error ERR

hybrid_log "head node: $HEAD_CPUS CPU(s) at $gcs, dashboard $dashboard"
ray_cli start --head \
    --node-ip-address 127.0.0.1 \
    --port "$HYBRID_RAY_PORT" \
    --num-cpus "$HEAD_CPUS" --num-gpus 0 \
    --resources '{"local_head": 1}' \
    --dashboard-host 127.0.0.1 --dashboard-port "$HYBRID_DASHBOARD_PORT" \
    --dashboard-agent-listen-port "$AGENT_PORT" \
    --ray-client-server-port "$CLIENT_PORT" \
    --temp-dir "$HYBRID_RAY_TMP" \
    --disable-usage-stats >&2

# Its own temp dir (inside the head's, so stop.sh finds it): two nodes sharing one session dir
# would each forward every worker's output, and job logs would show each line twice.
hybrid_log "worker node: $WORKER_CPUS CPU(s)"
ray_cli start \
    --address "$gcs" \
    --node-ip-address 127.0.0.1 \
    --num-cpus "$WORKER_CPUS" --num-gpus 0 \
    --resources '{"local_worker": 1}' \
    --dashboard-agent-listen-port "$((AGENT_PORT + 1))" \
    --temp-dir "$HYBRID_RAY_TMP/worker" \
    --disable-usage-stats >&2

# Wait until both raylets have registered; keep their node ids (stop.sh uses them to find the
# processes that do not name the temp dir, such as the Ray Client server).
node_ids="$("$PYTHON" - "$gcs" <<'PY'
import sys, time
import ray

ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
deadline = time.time() + 60
while True:
    alive = [n for n in ray.nodes() if n["Alive"]]
    if len(alive) >= 2:
        break
    if time.time() > deadline:
        sys.exit(f"only {len(alive)} Ray node(s) alive after 60 s")
    time.sleep(0.5)
print(f"{len(alive)} nodes alive, resources: {ray.cluster_resources()}", file=sys.stderr)
print(" ".join(n["NodeID"] for n in alive))
PY
)"
trap - ERR

cat >"$HYBRID_RAY_ENV" <<ENV
export RAY_AUTH_MODE=$RAY_AUTH_MODE
export RAY_ADDRESS=$gcs
export RAY_API_SERVER_ADDRESS=$dashboard
export HYBRID_PYTHON=$PYTHON
export HYBRID_RAY_NODE_IDS="$node_ids"
ENV
cat "$HYBRID_RAY_ENV"
hybrid_log "ready: infra/local/submit.sh <run.yml> submits a run; \`ray status --address $gcs\` shows the nodes"
