#!/usr/bin/env bash
# `make test`: install what is needed, start the local stack, run every test layer, print each layer's time.
# The stack is stopped at the end only if this run started it. Exit code: 0 when every layer passed.
# Choose layers with LAYERS="sanity lint pytest molecule" (default: all).
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
cd "$repo" || exit 1

started_at=$(date +%s)
tests/scripts/bootstrap.sh || exit 1
# shellcheck source=tests/scripts/env.sh
source tests/scripts/env.sh

# Stop at the end only the stack this run started, or one a killed earlier test run left behind
# (its marker names a process that is gone); a stack someone started by hand stays up.
marker="${RUNBOOK_STACK_DIR:-$repo/.stack}/started-by-test-run"
stack_was_running=0
if .venv/bin/python tests/stack/stack.py status >/dev/null 2>&1; then
    stack_was_running=1
    if [[ -f "$marker" ]] && ! kill -0 "$(cat "$marker")" 2>/dev/null; then
        echo "adopting the stack a killed test run left running"
        stack_was_running=0
    fi
fi
stop_stack() {
    if ((stack_was_running == 0)); then
        .venv/bin/python tests/stack/stack.py stop >/dev/null 2>&1 || true
        rm -f "$marker"
    fi
}
trap stop_stack EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
.venv/bin/python tests/stack/stack.py start || exit 1
if ((stack_was_running == 0)); then
    echo $$ > "$marker"
fi
# shellcheck disable=SC1091
source "${RUNBOOK_STACK_DIR:-$repo/.stack}/stack.env"

declare -a names=() results=() seconds=()
run_layer() {
    local name="$1"
    shift
    printf '\n===== %s =====\n' "$name"
    local t0=$SECONDS
    "$@"
    local rc=$?
    names+=("$name")
    seconds+=($((SECONDS - t0)))
    if ((rc == 0)); then results+=(passed); else results+=("FAILED (exit $rc)"); fi
}

layers="${LAYERS:-sanity lint pytest molecule}"
for layer in $layers; do
    case "$layer" in
        sanity) run_layer "ansible-test sanity" tests/sanity/run.sh ;;
        lint) run_layer "ansible-lint (production profile)" tests/lint/run.sh ;;
        pytest) run_layer "unit + integration (pytest)" .venv/bin/pytest -p no:randomly -q -W ignore::DeprecationWarning ;;
        molecule) run_layer "molecule" tests/scripts/molecule_all.sh ;;
        *) echo "unknown layer: $layer" >&2; exit 2 ;;
    esac
done

printf '\n===== summary =====\n'
failed=0
for i in "${!names[@]}"; do
    printf '%-40s %-18s %4ss\n' "${names[$i]}" "${results[$i]}" "${seconds[$i]}"
    [[ "${results[$i]}" == passed ]] || failed=$((failed + 1))
done
printf '%-40s %-18s %4ss\n' "whole run (with set-up)" "" "$(($(date +%s) - started_at))"
printf 'layers: %d passed, %d failed\n' $((${#names[@]} - failed)) "$failed"
((failed == 0))
