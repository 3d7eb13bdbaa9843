#!/usr/bin/env bash
# Run ansible-lint (profile: production, from .config/ansible-lint.yml) on this collection, offline.
#
# Usage: tests/lint/run.sh [ansible-lint options and paths...]
#   tests/lint/run.sh                      # whole repo
#   tests/lint/run.sh roles/app            # some paths
#   tests/lint/run.sh -f pep8              # any `ansible-lint --help` option
# The exit code is ansible-lint's.
#
# Why each step (read from ansible-lint 26.10 and ansible-compat 26.10 source in .venv):
# - --offline: without it, ansible-compat's Runtime.prepare_environment() runs `ansible-galaxy collection
#   install` for every galaxy.yml dependency and requirements.yml (galaxy is unreachable here), ansible-lint
#   refreshes its JSON schemas from the network and asks PyPI for a newer version. (ANSIBLE_LINT_NODEPS=1 would
#   also be offline but turns checks off, so it is not used.)
# - Offline also skips installing this collection into ansible-lint's cache (_handle_local_install), so
#   runbook.deploy.* would not resolve: we symlink the repo as .cache/lint/collections/ansible_collections/
#   runbook/deploy and put that first on ANSIBLE_COLLECTIONS_PATH, then the venv's site-packages, which hold
#   the dependencies from the `ansible` package.
# - ~/.ansible (ANSIBLE_HOME, ansible-lint's cache_dir when ANSIBLE_* paths are set) and ~/.cache/ansible-lint
#   (XDG_CACHE_HOME) go under .cache/home, like tests/sanity/run.sh.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
venv_bin="$repo/.venv/bin"
python="$venv_bin/python"
home="$repo/.cache/home"
collections="$repo/.cache/lint/collections"

if [[ ! -x "$venv_bin/ansible-lint" ]]; then
    echo "tests/lint/run.sh: $venv_bin/ansible-lint not found; create the venv from requirements/dev.txt first" >&2
    exit 2
fi

facts_text="$("$python" - "$repo/galaxy.yml" <<'PY'
import sys
import sysconfig

import yaml

with open(sys.argv[1], encoding='utf-8') as f:
    galaxy = yaml.safe_load(f)
print(galaxy['namespace'])
print(galaxy['name'])
print(sysconfig.get_paths()['purelib'])
PY
)"
mapfile -t facts <<<"$facts_text"
namespace="${facts[0]}"
name="${facts[1]}"
site_packages="${facts[2]}"

mkdir -p "$home/.ansible" "$home/.cache" "$collections/ansible_collections/$namespace"
ln -sfn "$repo" "$collections/ansible_collections/$namespace/$name"

cd "$repo"
export HOME="$home"
export XDG_CACHE_HOME="$home/.cache"
export ANSIBLE_HOME="$home/.ansible"
export ANSIBLE_COLLECTIONS_PATH="$collections:$site_packages"
export PATH="$venv_bin:$PATH"
# ansible-lint colours its output whenever TERM contains "xterm", even into a pipe or a CI log.
if [[ ! -t 1 && -z "${FORCE_COLOR:-}${PY_COLORS:-}${CLICOLOR:-}${ANSIBLE_FORCE_COLOR:-}" ]]; then
    export NO_COLOR=1
fi
exec "$venv_bin/ansible-lint" --offline "$@"
