#!/usr/bin/env bash
# The Prefect worker of docker-compose.yml: prepare what the flows expect, then serve the work pool.
#   - the process work pool of prefect.yaml (`local`);
#   - the run bucket on the object store (MinIO), when LIFT_BUCKET is set;
#   - the GPU concurrency limit, sized by LIFT_GPU_SLOTS (the cluster's GPUs), when set.
set -euo pipefail
pool="${LIFT_WORK_POOL:-local}"

prefect work-pool inspect "$pool" >/dev/null 2>&1 || prefect work-pool create "$pool" --type process

if [ -n "${LIFT_BUCKET:-}" ]; then
  python - <<'PY'
import os

import fsspec

fs = fsspec.filesystem("s3")
bucket = os.environ["LIFT_BUCKET"]
if not fs.exists(bucket):
    fs.mkdir(bucket)
    print(f"created bucket s3://{bucket}")
PY
fi

if [ -n "${LIFT_GPU_SLOTS:-}" ]; then
  prefect gcl inspect "${LIFT_GPU_LIMIT:-lift-gpu}" >/dev/null 2>&1 \
    || prefect gcl create "${LIFT_GPU_LIMIT:-lift-gpu}" --limit "$LIFT_GPU_SLOTS"
fi

exec prefect worker start --pool "$pool" --type process --with-healthcheck --name "lift-worker-${HOSTNAME:-0}"
