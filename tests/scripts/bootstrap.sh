#!/usr/bin/env bash
# Install what the tests and the demo need, once: system packages, the Python venv, the Node tools.
# Re-running is cheap: each step is skipped while its inputs (requirement and lock files) are unchanged.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
cd "$repo"

log() { printf 'bootstrap: %s\n' "$*"; }

# System packages: redis-server for the stack, shellcheck for ansible-test's shellcheck sanity test,
# the PostgreSQL 15 server and client tools (preinstalled on this image; a no-op then).
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v shellcheck >/dev/null || need+=(shellcheck)
[[ -x /usr/lib/postgresql/15/bin/initdb ]] || need+=(postgresql-15)
command -v pg_dump >/dev/null || need+=(postgresql-client-15)
command -v node >/dev/null || need+=(nodejs npm)
# crontab(1) for the backend role's cron jobs (tests/integration/roles/test_backend_cron.py): the cron package
# alone, without the mail server it recommends; its daemon is not started (the tests run the entries themselves).
if ! command -v crontab >/dev/null; then
    log "installing cron (crontab)"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends cron >/dev/null 2>&1; then
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends cron >/dev/null
    fi
fi
if ((${#need[@]})); then
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q "${need[@]}" >/dev/null 2>&1; then
        apt-get update -q >/dev/null
        apt-get install -y -q "${need[@]}" >/dev/null
    fi
fi

# Node: PM2, the Prisma CLI and Unleash from package-lock.json. npm ci runs in the background while pip installs
# the venv (both mostly download and unpack: together they take the time of the longer one on a fresh clone).
stamp_node="node_modules/.package-lock.sha256"
want_node="$(sha256sum package-lock.json | cut -d' ' -f1)"
npm_pid=""
if [[ ! -d node_modules || "$(cat "$stamp_node" 2>/dev/null)" != "$want_node" ]]; then
    log "installing Node packages (npm ci)"
    mkdir -p .cache
    (npm ci --no-audit --no-fund --loglevel=error --cache "$repo/.cache/npm" >.cache/npm-ci.log 2>&1 &&
        echo "$want_node" >"$stamp_node") &
    npm_pid=$!
fi

# Python: a venv at .venv from the pinned requirements.
stamp=".venv/.requirements.sha256"
want="$(cat requirements/dev.txt requirements/python.txt | sha256sum | cut -d' ' -f1)"
if [[ ! -x .venv/bin/python || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    log "creating .venv from requirements/dev.txt"
    python3 -m venv .venv
    # pip's output is shown only when it fails (this machine's pip config adds a warning per package).
    # --no-compile: pip would compile every file it installs (the ansible package's collections are most of them),
    # 51 s instead of 21 s here, on the path of every CI run; Python compiles the few hundred the tests import.
    if ! .venv/bin/pip install -q --no-compile --disable-pip-version-check -r requirements/dev.txt \
        >.venv/pip-install.log 2>&1; then
        cat .venv/pip-install.log >&2
        exit 1
    fi
    echo "$want" > "$stamp"
fi

# Tests only: two caches of what Ansible builds again for every module run (see tests/scripts/site/), loaded by the
# venv's site-packages; each is active only where its variable is set (tests/scripts/env.sh, tests/scripts/run_all.sh).
for site_packages in .venv/lib/python3*/site-packages; do
    printf '%s\nimport runbook_payload_bytecode_cache\nimport runbook_ansiballz_cache\n' "$repo/tests/scripts/site" \
        >"$site_packages/runbook-tests-caches.pth"
done

if [[ -n "$npm_pid" ]] && ! wait "$npm_pid"; then
    cat .cache/npm-ci.log >&2
    exit 1
fi
# @prisma/adapter-pg: map PostgreSQL `name` (oid 19) to text for Prisma's offline JS schema engine
# (upstream bug prisma/orm#27403). Idempotent; run every time so a node_modules installed before it is patched too.
.venv/bin/python tests/scripts/prisma_setup.py >/dev/null
# A large real-world Prisma migration history (LiteLLM's, from PyPI, sha256-pinned) for the native-engine tests.
.venv/bin/python tests/scripts/prisma_history.py >/dev/null
log "ready"
