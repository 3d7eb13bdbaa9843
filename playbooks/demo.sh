#!/usr/bin/env bash
# `make demo`: on a fresh machine, install what is needed, start the local stack (PostgreSQL, Redis, PM2, moto for
# S3/CloudFront/STS, Unleash) and run the whole runbook on the bundled sample application:
#   1. a staging deployment of v1.0.0 (inventories/local)
#   2. a production deployment of v1.0.0 to three app hosts in batches, behind the production gates
#      (inventories/local-production: approval given as extra vars, staging success required)
#   3. a staging deployment of v1.1.0 built broken on purpose: its smoke tests fail and it rolls itself back
# The stack keeps running afterwards, with the apps (ports 39101, 39111-39113): `make stack-stop` stops it all.
# RUNBOOK_DEMO_PORT_BASE (default 39100) moves those ports, for a second checkout on the same machine.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$repo"
port_base="${RUNBOOK_DEMO_PORT_BASE:-39100}"
tests/scripts/bootstrap.sh
# shellcheck source=tests/scripts/env.sh
source tests/scripts/env.sh
.venv/bin/python tests/stack/stack.py start
# shellcheck disable=SC1091
source "${RUNBOOK_STACK_DIR:-$repo/.stack}/stack.env"
export RUNBOOK_REPO="$repo"
# Every run writes its deployment report (JSON, Markdown, HTML) beside the history: docs/deploy_report.md.
export ANSIBLE_CALLBACKS_ENABLED=runbook.deploy.deploy_report
if [[ -t 1 ]]; then export ANSIBLE_FORCE_COLOR=1; fi

# Bold headings on a terminal only: a CI log or a file gets plain text.
if [[ -t 1 ]]; then
    step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
else
    step() { printf '\n== %s\n' "$*"; }
fi
step "preparing both local environments (databases, buckets, CloudFront distributions)"
ansible-playbook -i inventories/local playbooks/local_sample_app.yml
ansible-playbook -i inventories/local-production playbooks/local_sample_app.yml

step "1/3 staging deployment of v1.0.0"
ansible-playbook -i inventories/local playbooks/deploy_staging.yml -e runbook_version=v1.0.0

step "2/3 production deployment of v1.0.0: three app hosts in batches, gates passed by extra vars"
ansible-playbook -i inventories/local-production playbooks/deploy_production.yml -e runbook_version=v1.0.0 \
    -e runbook_approved_by="demo (make demo)" -e runbook_ticket=DEMO-1

step "3/3 staging deployment of v1.1.0, broken on purpose (its /api/cases answers 500): it must roll itself back"
if ansible-playbook -i inventories/local playbooks/deploy_staging.yml -e runbook_version=v1.1.0 -e sample_app_fault=smoke; then
    echo "the broken release was NOT caught" >&2
    exit 1
fi
version="$(curl -fsS "http://127.0.0.1:$((port_base + 1))/health")"
echo "staging answers after the automatic rollback: $version"
[[ "$version" == *'"version":"v1.0.0"'* ]]

step "done"
echo "History: ${RUNBOOK_STACK_DIR:-$repo/.stack}/history/*.jsonl, reports in history/reports/.   Apps: http://127.0.0.1:$((port_base + 1))/health (staging),"
echo "http://127.0.0.1:$((port_base + 11))/health .. $((port_base + 13)) (production). Stop everything with: make stack-stop"
