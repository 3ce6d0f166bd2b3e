#!/usr/bin/env bash
# Stop what start_cluster.sh and start_s3.sh started: the two Ray nodes and the moto server.
#
#   infra/local/stop.sh          # only this local cluster: the processes using $HYBRID_RAY_TMP
#                                # or naming its node ids (and their children), so other Ray
#                                # instances on the machine, e.g. a test's ray.init(), keep running
#   infra/local/stop.sh --all    # `ray stop`: every Ray process of this user on the machine
set -euo pipefail
# shellcheck source=infra/local/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

mode="${1:-}"
case "$mode" in
    "" ) ;;
    --all) ;;
    *) hybrid_die "usage: $0 [--all]" ;;
esac

# ---- Ray
if [ "$mode" = "--all" ]; then
    ray_cli stop >&2 || true
else
    # Processes whose command line names this cluster's temp dir: gcs_server, raylets,
    # dashboard, agents, log monitor; plus their descendants (workers rename themselves to
    # "ray::..." and would not match). SIGTERM, then SIGKILL after a grace period.
    node_ids=""
    if [ -f "$HYBRID_RAY_ENV" ]; then
        node_ids="$(. "$HYBRID_RAY_ENV" && echo "${HYBRID_RAY_NODE_IDS:-}")"
    fi
    "$PYTHON" - "$HYBRID_RAY_TMP" $node_ids <<'PY'
import os, sys
import ray  # noqa: F401  (puts Ray's vendored psutil on sys.path)
import psutil

tmp = sys.argv[1].rstrip("/")
node_flags = {f"--node-id={n}" for n in sys.argv[2:]}
me = os.getpid()


def ours(args):
    """True when an argument is the temp dir or a path in it (also as --opt=PATH), or names
    one of this cluster's node ids."""
    for arg in args:
        if arg in node_flags:
            return True
        value = arg.split("=", 1)[1] if arg.startswith("-") and "=" in arg else arg
        if value == tmp or value.startswith(tmp + "/"):
            return True
    return False


found = {}
for proc in psutil.process_iter(["pid", "cmdline"]):
    try:
        if proc.pid != me and ours(proc.info["cmdline"] or []):
            found[proc.pid] = proc
            for child in proc.children(recursive=True):
                found[child.pid] = child
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass
found.pop(me, None)
procs = list(found.values())
for p in procs:
    try:
        p.terminate()
    except psutil.NoSuchProcess:
        pass
gone, alive = psutil.wait_procs(procs, timeout=5)
if alive:
    def name(p):
        try:
            return p.name()
        except psutil.Error:
            return "?"
    names = sorted({name(p) for p in alive})
    print(f"[hybrid-local] SIGKILL for {len(alive)} process(es) still up after 5 s: "
          f"{', '.join(names)}", file=sys.stderr)
for p in alive:
    try:
        p.kill()
    except psutil.NoSuchProcess:
        pass
psutil.wait_procs(alive, timeout=5)
print(f"[hybrid-local] stopped {len(procs)} Ray process(es) of {tmp}", file=sys.stderr)
PY
fi
rm -f "$HYBRID_RAY_ENV"

# ---- moto
if [ -f "$HYBRID_MOTO_PID" ]; then
    pid="$(cat "$HYBRID_MOTO_PID")"
    if kill -0 "$pid" 2>/dev/null && ps -o args= -p "$pid" | grep -q "moto.server"; then
        kill "$pid"
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        hybrid_log "stopped moto (pid $pid)"
    fi
    rm -f "$HYBRID_MOTO_PID"
fi
rm -f "$HYBRID_S3_ENV"
hybrid_log "done (Ray logs kept in $HYBRID_RAY_TMP)"
