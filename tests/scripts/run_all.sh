#!/usr/bin/env bash
# `make test`: install what is needed, start the local stack, run every test layer, print each layer's time and
# the whole run's. The stack is stopped at the end only if this run started it. Exit code: 0 when every layer passed.
# Choose layers with LAYERS="sanity lint pytest molecule" (default: all).
#
# The layers run at the same time (LAYERS_IN_SERIES=1 runs them one after the other): most of the suite's time is
# waiting (Ansible's start-up, PM2, PostgreSQL, the Prisma CLI's idle), not CPU, so on two cores the static checks,
# the pytest workers (PYTEST_WORKERS, default 4) and the molecule scenarios (MOLECULE_JOBS, default 3) overlap.
# Every test has its own databases, buckets, PM2 homes and ports, so nothing they share is written twice.
# Each layer's output goes to .cache/layers/<layer>.log and is printed whole when the layer ends.
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
cd "$repo" || exit 1

started_at=$(date +%s)
tests/scripts/bootstrap.sh || exit 1
# shellcheck source=tests/scripts/env.sh
source tests/scripts/env.sh

# Every playbook of this run shares one AnsiballZ cache (tests/scripts/site/runbook_ansiballz_cache.py): the modules
# do not change during a run. A new directory for each run, removed at its end, so an edited module is built again.
export RUNBOOK_ANSIBALLZ_CACHE="$repo/.cache/ansiballz/run-$$"
for stale in "$repo"/.cache/ansiballz/run-*; do  # left by killed runs
    [[ -d "$stale" ]] && ! kill -0 "${stale##*/run-}" 2>/dev/null && rm -rf "$stale"
done

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
layer_pids=()
stop_stack() {
    # Layers still running (the run was interrupted) end first: they use the stack.
    for pid in "${layer_pids[@]}"; do
        kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
    done
    if ((stack_was_running == 0)); then
        .venv/bin/python tests/stack/stack.py stop >/dev/null 2>&1 || true
        rm -f "$marker"
    fi
    rm -rf "$RUNBOOK_ANSIBALLZ_CACHE"
    [[ -n "${sampler_pid:-}" ]] && kill "$sampler_pid" 2>/dev/null
}
trap stop_stack EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
stack_t0=$SECONDS
.venv/bin/python tests/stack/stack.py start || exit 1
stack_seconds=$((SECONDS - stack_t0))
if ((stack_was_running == 0)); then
    echo $$ > "$marker"
fi
# shellcheck disable=SC1091
source "${RUNBOOK_STACK_DIR:-$repo/.stack}/stack.env"

logs="$repo/.cache/layers"
mkdir -p "$logs"
layer_command() {
    case "$1" in
        sanity) echo "ansible-test sanity|tests/sanity/run.sh" ;;
        lint) echo "ansible-lint (production profile)|tests/lint/run.sh" ;;
        pytest) echo "unit + integration (pytest)|.venv/bin/pytest -p no:randomly -q -W ignore::DeprecationWarning -n ${PYTEST_WORKERS:-4} --dist load --maxschedchunk 1 --durations=25" ;;
        molecule) echo "molecule|tests/scripts/molecule_all.sh" ;;
        *) return 1 ;;
    esac
}
# Seconds of CPU (user + system) in the second line of the times builtin's output (the shell's waited-for children).
cpu_seconds() {
    awk 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/); printf "%d", u[1] * 60 + u[2] + s[1] * 60 + s[2] }' "$1"
}
# Runs one layer with its output in its log; its exit code, seconds and CPU seconds go into <layer>.status.
# The times builtin runs in this (sub)shell itself: inside $(...) it would count only that subshell's children.
run_layer() {
    local layer="$1" spec t0=$SECONDS rc
    spec="$(layer_command "$layer")"
    times >"$logs/$layer.cpu0"
    # shellcheck disable=SC2086 # the command line is split on purpose
    ${spec#*|} >"$logs/$layer.log" 2>&1
    rc=$?
    times >"$logs/$layer.cpu1"
    echo "$rc $((SECONDS - t0)) $(($(cpu_seconds "$logs/$layer.cpu1") - $(cpu_seconds "$logs/$layer.cpu0")))" \
        >"$logs/$layer.status"
}

# The machine's CPU, sampled every 30 s while the layers run (the whole machine's, daemons and neighbours included):
# where cores sit idle, more parallel work would fit; "stolen" is time the virtual machine's host took away.
(while sleep 30; do head -1 /proc/stat; done) >"$logs/proc-stat" 2>/dev/null &
sampler_pid=$!

layers="${LAYERS:-sanity lint pytest molecule}"
for layer in $layers; do
    layer_command "$layer" >/dev/null || { echo "unknown layer: $layer" >&2; exit 2; }
    rm -f "$logs/$layer.status"
done

declare -a names=() results=() seconds=() cpus=()
finish_layer() {
    local layer="$1" spec rc secs cpu
    spec="$(layer_command "$layer")"
    read -r rc secs cpu <"$logs/$layer.status"
    printf '\n===== %s (%ss, %ss of CPU) =====\n' "${spec%%|*}" "$secs" "$cpu"
    cat "$logs/$layer.log"
    names+=("${spec%%|*}")
    seconds+=("$secs")
    cpus+=("$cpu")
    if ((rc == 0)); then results+=(passed); else results+=("FAILED (exit $rc)"); fi
}

if [[ "${LAYERS_IN_SERIES:-0}" == 1 ]]; then
    for layer in $layers; do
        run_layer "$layer"
        finish_layer "$layer"
    done
else
    # The static checks (CPU-bound) one after the other, beside pytest and molecule.
    declare -A group=()
    for layer in $layers; do
        case "$layer" in
            sanity|lint) group[static]+="$layer " ;;
            *) group[$layer]="$layer" ;;
        esac
    done
    # Job control gives each group its own process group, so an interrupted run can end a whole group.
    set -m
    for key in "${!group[@]}"; do
        # shellcheck disable=SC2086
        (for layer in ${group[$key]}; do run_layer "$layer"; done) &
        layer_pids+=($!)
    done
    set +m
    printf 'running at once: %s\n' "$(for key in "${!group[@]}"; do printf '[%s] ' "${group[$key]% }"; done)"
    pending=" $layers "
    while [[ -n "${pending// /}" ]]; do
        sleep 1
        for layer in $pending; do
            if [[ -f "$logs/$layer.status" ]]; then
                finish_layer "$layer"
                pending="${pending/ $layer / }"
            fi
        done
    done
    wait "${layer_pids[@]}"
    layer_pids=()
fi

printf '\n===== summary =====\n'
failed=0
printf '%-40s %-18s %4ss\n' "local stack start" "" "$stack_seconds"
for i in "${!names[@]}"; do
    printf '%-40s %-18s %4ss  (CPU %ss)\n' "${names[$i]}" "${results[$i]}" "${seconds[$i]}" "${cpus[$i]}"
    [[ "${results[$i]}" == passed ]] || failed=$((failed + 1))
done
whole=$(($(date +%s) - started_at))
printf '%-40s %-18s %4ss\n' "whole run (with set-up)" "" "$whole"
# CPU time of everything this run waited for (daemons such as the stack's servers and PM2 are not counted): what the
# layers cost the machine, beside the wall-clock time they took.
times >"$logs/times"
cpu=$(cpu_seconds "$logs/times")
printf '%-40s %-18s %4ss (%s cores busy on average)\n' "CPU time of the layers" "" "$cpu" \
    "$(awk -v c="$cpu" -v w="$whole" 'BEGIN { printf "%.1f", w ? c / w : 0 }')"
kill "$sampler_pid" 2>/dev/null
awk -v cores="$(nproc)" '
    { busy = $2 + $3 + $4 + $7 + $8; total = busy + $5 + $6 + $9
      if (NR > 1 && total > last_total) {
          line = line sprintf(" %.1f", cores * (busy - last_busy) / (total - last_total))
          stolen += $9 - last_stolen; all += total - last_total }
      last_busy = busy; last_total = total; last_stolen = $9 }
    END { if (line != "") printf "cores busy, every 30 s:%s (stolen: %.0f %%)\n", line, all ? 100 * stolen / all : 0 }
' "$logs/proc-stat"
printf 'layers: %d passed, %d failed\n' $((${#names[@]} - failed)) "$failed"
((failed == 0))
