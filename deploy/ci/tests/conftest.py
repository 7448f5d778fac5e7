"""Shared paths and helpers of the deploy/ checks."""

import os
import sys
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[2]
REPO = DEPLOY.parent
CHART = DEPLOY / "helm" / "scalr-agent"

# The launchers' shared package, imported by the Lambda and the Cloud Function as well.
sys.path.insert(0, str(DEPLOY / "launcher"))

# Where deploy/ci.sh wants rendered manifests kept (for checkov); a temporary dir otherwise.
RENDER_DIR = Path(os.environ.get("DEPLOY_RENDER_DIR", "/tmp/scalr-agent-deploy-rendered"))
