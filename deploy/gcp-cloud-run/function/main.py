"""The Cloud Run launcher, a Cloud Function (2nd gen) called every minute by Cloud Scheduler:
starts executions of the single-mode Cloud Run job for the pool's pending tasks.

The queue token comes from Secret Manager as the mounted file QUEUE_TOKEN_FILE; the access
token for the Cloud Run Admin API from the metadata server (the function's service account).
"""

import logging
import os

from scalr_launcher import launch_once, read_queue
from scalr_launcher.cloudrun import CloudRunRunner

logging.getLogger().setLevel(logging.INFO)

REQUIRED = ("SCALR_URL", "QUEUE_TOKEN_FILE", "PROJECT", "REGION", "JOB")


def launch(request, env=None, runner=None):
    env = os.environ if env is None else env
    missing = [k for k in REQUIRED if not env.get(k)]
    if missing:
        raise ValueError(f"launcher: missing environment variables: {', '.join(missing)}")
    with open(env["QUEUE_TOKEN_FILE"]) as f:
        token = f.read().strip()
    runner = runner or CloudRunRunner(env["PROJECT"], env["REGION"], env["JOB"])
    result = launch_once(lambda: read_queue(env["SCALR_URL"], token), runner, int(env.get("MAX_AGENTS", "10")))
    return {"pending": result.depth.pending, "running": result.depth.running, "alive": result.alive, "started": result.started}
