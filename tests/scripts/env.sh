# shellcheck shell=bash
# Sourced by the project's scripts: keep every tool's state inside the tree (.cache/), use the venv,
# and find this collection through a link, not a copy. Safe to source twice.
repo="${repo:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)}"
export RUNBOOK_REPO="$repo"
export PATH="$repo/.venv/bin:$repo/node_modules/.bin:$PATH"
export ANSIBLE_HOME="$repo/.cache/ansible"
export ANSIBLE_LOCAL_TEMP="$repo/.cache/ansible/tmp"
export ANSIBLE_REMOTE_TEMP="$repo/.cache/ansible/remote-tmp"
export ANSIBLE_COLLECTIONS_PATH="$repo/.cache/ansible/collections"
export ANSIBLE_PYTHON_INTERPRETER="$repo/.venv/bin/python"
export ANSIBLE_NOCOLOR="${ANSIBLE_NOCOLOR:-1}"
export ANSIBLE_FORCE_COLOR=0
export XDG_CACHE_HOME="$repo/.cache/xdg"
export MOLECULE_EPHEMERAL_DIRECTORY="${MOLECULE_EPHEMERAL_DIRECTORY:-$repo/.cache/molecule/default}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
# Module runs of the tests reuse the bytecode of their payloads' module_utils (tests/scripts/site/).
export RUNBOOK_PAYLOAD_BYTECODE_CACHE="$repo/.cache/payload-bytecode"
export npm_config_cache="$repo/.cache/npm"
export PRISMA_HIDE_UPDATE_MESSAGE=1 CHECKPOINT_DISABLE=1
# runbook.deploy itself, as ansible_collections/runbook/deploy -> the repo root.
mkdir -p "$ANSIBLE_COLLECTIONS_PATH/ansible_collections/runbook" "$ANSIBLE_LOCAL_TEMP"
ln -sfn "$repo" "$ANSIBLE_COLLECTIONS_PATH/ansible_collections/runbook/deploy"
# The local stack's addresses, when it runs.
if [[ -f "${RUNBOOK_STACK_DIR:-$repo/.stack}/stack.env" ]]; then
    # shellcheck disable=SC1091
    source "${RUNBOOK_STACK_DIR:-$repo/.stack}/stack.env"
fi
