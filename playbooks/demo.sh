#!/usr/bin/env bash
# `make demo`: on a fresh machine, install what is needed, start the local stack and run the main job against
# inventories/local. Today the main job is the pre-migration backup (the first runbook phase automated); it
# grows into the full local deploy as the playbooks land. The stack keeps running afterwards: `make stack-stop`.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$repo"
tests/scripts/bootstrap.sh
# shellcheck source=tests/scripts/env.sh
source tests/scripts/env.sh
.venv/bin/python tests/stack/stack.py start --only postgres,moto
# shellcheck disable=SC1091
source "${RUNBOOK_STACK_DIR:-$repo/.stack}/stack.env"
export ANSIBLE_NOCOLOR=0 ANSIBLE_FORCE_COLOR=1
echo "== preparing the sample application's database and bucket"
ansible-playbook -i inventories/local playbooks/local_sample_app.yml
echo "== backup before the migration (verified, checksummed, uploaded to the stack's S3)"
ansible-playbook -i inventories/local playbooks/backup_database.yml
echo "== the same step again, as a re-run deployment would: the verified backup is reused, nothing changes"
ansible-playbook -i inventories/local playbooks/backup_database.yml
echo "Backups: ${RUNBOOK_STACK_DIR:-$repo/.stack}/backups. Stop the stack with: make stack-stop"
