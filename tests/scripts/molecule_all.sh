#!/usr/bin/env bash
# Run every molecule scenario (molecule/<scenario>/) against the local stack. Needs tests/scripts/env.sh sourced
# and the stack running (tests/scripts/run_all.sh does both). Exit code: number of failed scenarios (capped).
#
# Scenarios run MOLECULE_JOBS at a time (default 3): each has its own databases, buckets, PM2 home, ports
# (below the kernel's ephemeral range, so no client socket of a concurrent test can hold them) and ephemeral
# directory, and most of a scenario's time is Ansible and the stack waiting, not CPU. Each scenario's output
# is kept in a log and printed whole when it ends, so the CI log reads scenario by scenario.
# Run some scenarios only: tests/scripts/molecule_all.sh backup migrate
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
cd "$repo" || exit 1
# shellcheck source=tests/scripts/env.sh
source tests/scripts/env.sh
jobs="${MOLECULE_JOBS:-3}"
logs="$repo/.cache/molecule/logs"
mkdir -p "$logs"

scenarios=()
if (($#)); then
    scenarios=("$@")
else
    for dir in molecule/*/; do
        [[ -f "$dir/molecule.yml" ]] && scenarios+=("$(basename "$dir")")
    done
fi

run_scenario() {
    local scenario="$1" t0=$SECONDS rc
    # A fresh state per scenario: with an unmanaged driver, a stale "prepared" flag would skip prepare. The state
    # (state.yml, the inventory molecule writes) lives only in the ephemeral directory, so removing it is what
    # `molecule reset` does here, without starting molecule once more (0.9 s of CPU per scenario).
    export MOLECULE_EPHEMERAL_DIRECTORY="$repo/.cache/molecule/$scenario"
    {
        rm -rf "$MOLECULE_EPHEMERAL_DIRECTORY"
        molecule test --scenario-name "$scenario"
    } >"$logs/$scenario.log" 2>&1
    rc=$?
    echo "$rc $((SECONDS - t0))" >"$logs/$scenario.status"
}

# Start the scenarios MOLECULE_JOBS at a time; print each one's log as soon as it has ended.
declare -A pids=()
printed=()
failed=0
report() {
    local scenario="$1" rc secs
    read -r rc secs <"$logs/$scenario.status"
    printf -- '--- molecule scenario %s (%ss)\n' "$scenario" "$secs"
    cat "$logs/$scenario.log"
    if ((rc != 0)); then
        echo "molecule scenario $scenario FAILED"
        failed=$((failed + 1))
    fi
    printed+=("$scenario $secs $rc")
}
reap() {
    local scenario
    for scenario in "${!pids[@]}"; do
        if ! kill -0 "${pids[$scenario]}" 2>/dev/null; then
            wait "${pids[$scenario]}" 2>/dev/null
            unset "pids[$scenario]"
            report "$scenario"
        fi
    done
}
for scenario in "${scenarios[@]}"; do
    rm -f "$logs/$scenario.status"
    while ((${#pids[@]} >= jobs)); do
        sleep 0.5
        reap
    done
    run_scenario "$scenario" &
    pids[$scenario]=$!
done
while ((${#pids[@]})); do
    sleep 0.5
    reap
done

printf -- '--- molecule scenarios (seconds each, %s at a time)\n' "$jobs"
for line in "${printed[@]}"; do
    read -r scenario secs rc <<<"$line"
    printf '%-12s %4ss  %s\n' "$scenario" "$secs" "$([[ $rc == 0 ]] && echo passed || echo "FAILED (exit $rc)")"
done
exit $((failed > 100 ? 100 : failed))
