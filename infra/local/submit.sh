#!/usr/bin/env bash
# Submit a pipeline run to the local cluster of start_cluster.sh as a Ray job and follow its
# logs until it ends (Ctrl-C stops following, not the job: `ray job stop <id>` does that).
#
#   infra/local/submit.sh configs/my_run.yml [extra `ray job submit` options, e.g. --no-wait]
#
# The entrypoint is "$PYTHON" jobs/run_pipeline.py --config <absolute config path> (or
# "$PYTHON" -m hybrid.cli run ... while jobs/run_pipeline.py does not exist yet): the absolute
# interpreter path makes the job use the same python as the cluster, whatever PATH the job
# server has. --working-dir uploads the repository (minus what .rayignore and .gitignore list),
# so the job runs the code as it is in this checkout. AWS_* settings of start_s3.sh are passed
# to the job.
set -euo pipefail
# shellcheck source=infra/local/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

[ $# -ge 1 ] || hybrid_die "usage: $0 <run.yml> [ray job submit options...]"
config="$1"
shift
[ -f "$config" ] || hybrid_die "config file not found: $config"
config="$(cd "$(dirname "$config")" && pwd)/$(basename "$config")"

[ -f "$HYBRID_RAY_ENV" ] || hybrid_die "no local cluster (run infra/local/start_cluster.sh first)"
# shellcheck disable=SC1090
source "$HYBRID_RAY_ENV"
# The job runs on the cluster's interpreter, recorded when it started.
job_python="${HYBRID_PYTHON:-$PYTHON}"

cd "$HYBRID_REPO"
if [ -f jobs/run_pipeline.py ]; then
    entrypoint=("$job_python" jobs/run_pipeline.py --config "$config")
else
    entrypoint=("$job_python" -m hybrid.cli run --config "$config")
fi

# Runtime environment: keep bulky folders out of the upload; hand the S3 settings to the job.
runtime_env="$("$PYTHON" - "$HYBRID_S3_ENV" <<'PY'
import json, os, sys
env = {}
path = sys.argv[1]
if os.path.isfile(path):
    for line in open(path):
        line = line.strip()
        if line.startswith("export ") and "=" in line:
            key, value = line[len("export "):].split("=", 1)
            env[key] = value
print(json.dumps({
    "excludes": [".git", ".benchmarks", ".pytest_cache", ".ruff_cache", "runs", "shared"],
    "env_vars": env,
}))
PY
)"

exec "$PYTHON" -m ray.scripts.scripts job submit \
    --address "$RAY_API_SERVER_ADDRESS" \
    --working-dir . \
    --runtime-env-json "$runtime_env" \
    "$@" \
    -- "${entrypoint[@]}"
