#!/usr/bin/env bash
# Start a local S3 endpoint (moto's server) on 127.0.0.1:$HYBRID_S3_PORT in the background and
# create the bucket $HYBRID_S3_BUCKET in it. No Docker, no cloud account.
#
#   eval "$(infra/local/start_s3.sh)"     # starts it and exports AWS_ENDPOINT_URL & co.
#
# stdout carries only `export ...` lines (also saved to $HYBRID_LOCAL_DIR/s3.env, which
# start_cluster.sh and submit.sh pick up); messages go to stderr. Needs moto[server] and boto3
# in $PYTHON (pip install -e '.[test]'). Stop it with infra/local/stop.sh.
set -euo pipefail
# shellcheck source=infra/local/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

"$PYTHON" -c 'import moto.server, boto3' 2>/dev/null \
    || hybrid_die "$PYTHON lacks moto[server] / boto3: $PYTHON -m pip install 'moto[server]' boto3"
mkdir -p "$HYBRID_LOCAL_DIR"

endpoint="http://127.0.0.1:$HYBRID_S3_PORT"

running_pid=""
if [ -f "$HYBRID_MOTO_PID" ]; then
    pid="$(cat "$HYBRID_MOTO_PID")"
    if kill -0 "$pid" 2>/dev/null && ps -o args= -p "$pid" | grep -q "moto.server"; then
        running_pid="$pid"
        hybrid_log "moto already running (pid $pid) at $endpoint"
    else
        rm -f "$HYBRID_MOTO_PID"
    fi
fi

if [ -z "$running_pid" ]; then
    port_is_free "$HYBRID_S3_PORT" \
        || hybrid_die "port $HYBRID_S3_PORT is in use; pick another with HYBRID_S3_PORT=..."
    nohup "$PYTHON" -m moto.server -H 127.0.0.1 -p "$HYBRID_S3_PORT" \
        >"$HYBRID_MOTO_LOG" 2>&1 </dev/null &
    echo $! >"$HYBRID_MOTO_PID"
    hybrid_log "moto started (pid $(cat "$HYBRID_MOTO_PID")), log: $HYBRID_MOTO_LOG"
fi

export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1
# Wait for the server, then create the bucket (idempotent).
"$PYTHON" - "$endpoint" "$HYBRID_S3_BUCKET" <<'PY' || hybrid_die "moto did not come up; see $HYBRID_MOTO_LOG"
import sys, time, urllib.request
import boto3

endpoint, bucket = sys.argv[1], sys.argv[2]
deadline = time.time() + 30
while True:
    try:
        urllib.request.urlopen(endpoint + "/", timeout=2).read()
        break
    except Exception:
        if time.time() > deadline:
            sys.exit(1)
        time.sleep(0.2)
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
if bucket not in existing:
    s3.create_bucket(Bucket=bucket)
print(f"bucket s3://{bucket} ready at {endpoint}", file=sys.stderr)
PY

cat >"$HYBRID_S3_ENV" <<ENV
export AWS_ENDPOINT_URL=$endpoint
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
export AWS_DEFAULT_REGION=us-east-1
export HYBRID_TEST_S3_ENDPOINT=$endpoint
ENV
cat "$HYBRID_S3_ENV"
hybrid_log "in a run config: store: s3://$HYBRID_S3_BUCKET/runs  and  storage_options: {endpoint_url: $endpoint}"
