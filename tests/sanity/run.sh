#!/usr/bin/env bash
# Run `ansible-test sanity` on this collection, offline, without touching the real $HOME.
#
# Usage: tests/sanity/run.sh [ansible-test sanity options...]
#   tests/sanity/run.sh                               # every sanity test
#   tests/sanity/run.sh --test validate-modules       # one test
#   tests/sanity/run.sh --test pylint --verbose       # anything `ansible-test sanity --help` lists
# The exit code is ansible-test's. Results stay in .cache/collections/ansible_collections/<ns>/<name>/tests/output/.
#
# Why each step (read from ansible-test 2.19 source in .venv):
# - ansible-test wants the tree laid out as ansible_collections/<ns>/<name>. We copy the working tree there
#   (tracked + untracked-but-not-ignored files, so .venv, node_modules, .stack, .cache never go in).
# - ansible-test picks its file list from the nearest .git at or above the collection root
#   (_internal/data.py, provider/source/git.py: `git ls-files --cached --others --exclude-standard`).
#   The copy lives in .cache/, which this repo's .gitignore ignores, so the outer repo would report no files.
#   A bare `git init` in the copy makes it its own content root; no commit is needed.
# - Each sanity test gets a venv under ~/.ansible/test/venv, created without pip and bootstrapped by
#   ~/.ansible/test/cache/get_pip_<ver>.py, downloaded from ci-files.testing.ansible.com when missing
#   (_util/target/setup/requirements.py, bootstrap()). That host is unreachable here, so we put
#   tests/sanity/get_pip_offline.py and a pip wheel from PyPI at that path. The other requirements come from PyPI.
# - HOME points at .cache/home, so those venvs and pip's cache stay in the tree.
# - Dependencies listed in galaxy.yml (and theirs) are symlinked next to our namespace from the `ansible` package in .venv,
#   because ansible-test puts only this collection root on ANSIBLE_COLLECTIONS_PATH.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
venv_bin="$repo/.venv/bin"
python="$venv_bin/python"
cache="$repo/.cache"
home="$cache/home"
wheels="$cache/wheels"
root="$cache/collections/ansible_collections"

if [[ ! -x "$venv_bin/ansible-test" ]]; then
    echo "tests/sanity/run.sh: $venv_bin/ansible-test not found; create the venv from requirements/dev.txt first" >&2
    exit 2
fi

mkdir -p "$cache" "$home" "$wheels" "$root"

# One run at a time: the collection copy and the venv cache are shared.
exec 9>"$cache/sanity.lock"
if ! flock --nonblock 9; then
    echo "tests/sanity/run.sh: waiting for another sanity run to finish" >&2
    flock 9
fi

# Facts from the sources of truth: galaxy.yml, ansible-test itself, the venv.
# Prints: namespace, name, pip version ansible-test bootstraps, python X.Y, site-packages, then the dependencies.
facts_text="$("$python" - "$repo/galaxy.yml" <<'PY'
import importlib.util
import json
import os
import re
import sys
import sysconfig

import yaml

with open(sys.argv[1], encoding='utf-8') as f:
    galaxy = yaml.safe_load(f)

spec = importlib.util.find_spec('ansible_test')
reqs = os.path.join(os.path.dirname(spec.origin), '_internal', 'python_requirements.py')
with open(reqs, encoding='utf-8') as f:
    match = re.search(r"default_packages = dict\(\s*pip='([^']+)'", f.read())
if not match:
    sys.exit('cannot find the pip version ansible-test bootstraps in %s' % reqs)

print(galaxy['namespace'])
print(galaxy['name'])
print(match.group(1))
print('%d.%d' % sys.version_info[:2])
site_packages = sysconfig.get_paths()['purelib']
print(site_packages)

# galaxy.yml dependencies, then theirs (from each bundled collection's MANIFEST.json), transitively.
todo = list(galaxy.get('dependencies') or {})
seen = []
while todo:
    dep = todo.pop(0)
    if dep in seen:
        continue
    seen.append(dep)
    manifest = os.path.join(site_packages, 'ansible_collections', *dep.split('.', 1), 'MANIFEST.json')
    if os.path.exists(manifest):
        with open(manifest, encoding='utf-8') as f:
            todo.extend(json.load(f)['collection_info'].get('dependencies') or {})
for dep in seen:
    print(dep)
PY
)"
mapfile -t facts <<<"$facts_text"
namespace="${facts[0]}"
name="${facts[1]}"
pip_version="${facts[2]}"
python_version="${facts[3]}"
site_packages="${facts[4]}"
dependencies=("${facts[@]:5}")

# 1. The pip wheel (once) and the offline bootstrap script in ansible-test's cache.
wheel="$wheels/pip-$pip_version-py3-none-any.whl"
if [[ ! -f "$wheel" ]]; then
    "$python" -m pip download --quiet --no-deps --only-binary=:all: --dest "$wheels" "pip==$pip_version"
fi
test_cache="$home/.ansible/test/cache"
mkdir -p "$test_cache"
rm -f "$test_cache"/pip-*-py3-none-any.whl
cp "$wheel" "$test_cache/"
cp "$repo/tests/sanity/get_pip_offline.py" "$test_cache/get_pip_${pip_version//./_}.py"

# 2. A fresh copy of the working tree at ansible_collections/<namespace>/<name>.
dest="$root/$namespace/$name"
rm -rf "$dest"
mkdir -p "$dest"
# Skipped: tracked files deleted in the working tree (still listed by --cached), and collections/ansible_collections/,
# where pytest-ansible (pytest_ansible/units.py) puts symlinks to every top-level entry of the repo, .cache included.
git -C "$repo" ls-files -z --cached --others --exclude-standard --deduplicate |
    while IFS= read -r -d '' path; do
        [[ "$path" == collections/ansible_collections/* ]] && continue
        if [[ -e "$repo/$path" || -L "$repo/$path" ]]; then printf '%s\0' "$path"; fi
    done |
    tar -C "$repo" --null --files-from=- -cf - | tar -C "$dest" -xf -
git -C "$dest" init --quiet

# 3. Dependencies from the `ansible` package, next to our namespace.
for dep in "${dependencies[@]}"; do
    dep_ns="${dep%%.*}"
    dep_name="${dep#*.}"
    src="$site_packages/ansible_collections/$dep_ns/$dep_name"
    [[ "$dep_ns" == "$namespace" && "$dep_name" == "$name" ]] && continue
    if [[ ! -d "$src" ]]; then
        echo "tests/sanity/run.sh: warning: dependency $dep not found in $site_packages/ansible_collections" >&2
        continue
    fi
    mkdir -p "$root/$dep_ns"
    ln -sfn "$src" "$root/$dep_ns/$dep_name"
done

# 4. Run. PATH: the venv first, so no pyenv shim is picked up; --python matches the venv, so ansible-test uses it.
cd "$dest"
export HOME="$home"
export PATH="$venv_bin:$PATH"
exec "$venv_bin/ansible-test" sanity --local --python "$python_version" "$@"
