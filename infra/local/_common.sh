# Shared settings for the infra/local/*.sh scripts (sourced, not run).
#
# Every script uses ONE Python interpreter, the one that has ray (and the hybrid package):
#   PYTHON=/path/to/venv/bin/python infra/local/start_cluster.sh
# Default: the python3 on PATH. Shims (pyenv, asdf) are resolved to the real interpreter, and
# its bin directory is put first on PATH, so the Ray processes - and every job entrypoint they
# start later, which inherits the PATH of `ray start` - find the same python.
#
# Knobs (environment): HYBRID_LOCAL_DIR (state: pid/env files), HYBRID_RAY_TMP (Ray's temp dir,
# keep it short: Ray puts unix sockets in it), HYBRID_RAY_PORT (GCS, 6379),
# HYBRID_DASHBOARD_PORT (8265), HYBRID_S3_PORT (5055), HYBRID_S3_BUCKET (hybrid).

hybrid_die() { echo "error: $*" >&2; exit 1; }
hybrid_log() { echo "[hybrid-local] $*" >&2; }

HYBRID_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

PYTHON="${PYTHON:-$(command -v python3 || true)}"
[ -n "$PYTHON" ] || hybrid_die "no python3 on PATH; set PYTHON=/path/to/python"
PYTHON="$("$PYTHON" -c 'import sys; print(sys.executable)')" \
    || hybrid_die "cannot run the interpreter PYTHON=$PYTHON"
HYBRID_PY_BIN="$(dirname "$PYTHON")"
export PATH="$HYBRID_PY_BIN:$PATH"
export PYTHON

HYBRID_UID="$(id -u)"
HYBRID_LOCAL_DIR="${HYBRID_LOCAL_DIR:-${TMPDIR:-/tmp}/hybrid-local-$HYBRID_UID}"
HYBRID_LOCAL_DIR="${HYBRID_LOCAL_DIR%/}"
HYBRID_RAY_TMP="${HYBRID_RAY_TMP:-/tmp/hybrid-ray-$HYBRID_UID}"
HYBRID_RAY_PORT="${HYBRID_RAY_PORT:-6379}"
HYBRID_DASHBOARD_PORT="${HYBRID_DASHBOARD_PORT:-8265}"
HYBRID_S3_PORT="${HYBRID_S3_PORT:-5055}"
HYBRID_S3_BUCKET="${HYBRID_S3_BUCKET:-hybrid}"

HYBRID_S3_ENV="$HYBRID_LOCAL_DIR/s3.env"      # written by start_s3.sh
HYBRID_RAY_ENV="$HYBRID_LOCAL_DIR/ray.env"    # written by start_cluster.sh
HYBRID_MOTO_PID="$HYBRID_LOCAL_DIR/moto.pid"
HYBRID_MOTO_LOG="$HYBRID_LOCAL_DIR/moto.log"

# The Ray CLI of exactly this interpreter (same as its `ray` script, without relying on PATH).
ray_cli() { "$PYTHON" -m ray.scripts.scripts "$@"; }

# True when nothing listens on 127.0.0.1:$1.
port_is_free() {
    "$PYTHON" - "$1" <<'PY'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers are no conflict
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
PY
}
