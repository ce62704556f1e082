#!/usr/bin/env bash
# A GPU session's checks in one command, within 9 minutes in all:   scripts/gpu_check.sh OUT
#
#   1. dry_run    python -m bench.dry_run --preset trm-arc1   (the paper preset on meta: mismatches, syncs, memory)
#   2. pytest     python -m pytest -m gpu -q                  (tests/test_gpu.py: about 3 minutes on one H100)
#   3. bench_gpu  python -m bench.gpu OUT --minutes 6         (fewer minutes if the steps before overran)
#
# Each step runs under `timeout` (its own cap, never past the 9 minutes), its output teed into
# OUT/<step>.log. A failing or timed-out step does not stop the next one. The end is one table
# (step, exit status, seconds), also written to OUT/summary.txt; exit status 124 means the step ran
# out of time. The script exits 1 when any step failed.
set -u -o pipefail

out=${1:?usage: scripts/gpu_check.sh OUT}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
python=${PYTHON:-python}
export PYTHONUNBUFFERED=1  # a step cut off by its timeout keeps every line it printed in its log

budget=${GPU_CHECK_SECONDS:-540}  # 9 minutes for the three steps together
bench_grace=30  # bench.gpu ends within its --minutes plus this many seconds
start=$SECONDS
failed=0
rows=()

seconds_left() {
    echo $(( budget - (SECONDS - start) ))
}

# run_step NAME CAP_SECONDS COMMAND...: the command under timeout, teed into OUT/NAME.log, one table row.
run_step() {
    local name=$1 cap=$2
    shift 2
    local left limit began code
    left=$(seconds_left)
    limit=$(( cap < left ? cap : left ))
    if (( limit <= 0 )); then
        rows+=("$name skipped 0")
        failed=1
        return
    fi
    echo "== $name (at most ${limit} s): $*"
    began=$SECONDS
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$out/$name.log"
    code=${PIPESTATUS[0]}
    rows+=("$name $code $(( SECONDS - began ))")
    (( code == 0 )) || failed=1
}

run_step dry_run 120 "$python" -m bench.dry_run --preset trm-arc1
run_step pytest 200 "$python" -m pytest -m gpu -q

# bench.gpu plans its rows by the minutes it is given: give it 6, or what is left if that is less,
# so that it ends on its own (keeping every row it measured) rather than being cut off.
left=$(seconds_left)
minutes=$(awk -v s=$(( left - bench_grace )) 'BEGIN { m = s / 60; if (m > 6) m = 6; printf "%.1f", m }')
if awk -v m="$minutes" 'BEGIN { exit !(m > 0) }'; then
    run_step bench_gpu "$left" "$python" -m bench.gpu "$out" --minutes "$minutes"
else
    rows+=("bench_gpu skipped 0")
    failed=1
fi

{
    printf '%-10s %-12s %s\n' step "exit status" seconds
    for row in "${rows[@]}"; do
        read -r name code took <<< "$row"
        printf '%-10s %-12s %s\n' "$name" "$code" "$took"
    done
    printf '%-10s %-12s %s\n' total "$failed" $(( SECONDS - start ))
} | tee "$out/summary.txt"
exit "$failed"
