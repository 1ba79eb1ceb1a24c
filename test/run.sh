#!/usr/bin/env bash
# test/run.sh: runs each test program or script given, shows its output, and ends with the grand
# total `total: N passed, N failed, N skipped`. Each test ends with its own summary line,
# `name: N passed, N failed` or `name: N passed, N failed, N skipped` (checks that need a tool or
# device this machine lacks count as skipped). A program that crashes, or ends without its own
# summary line, counts as one failure. Exit status is non-zero when anything failed.
set -u
passed=0
failed=0
skipped=0
summary_re='^([A-Za-z0-9_./-]+: )?([0-9]+) passed, ([0-9]+) failed(, ([0-9]+) skipped)?'
for t in "$@"; do
    case "$t" in
        *.sh) out=$(bash "$t" 2>&1); rc=$? ;;
        *)    out=$("$t" 2>&1); rc=$? ;;
    esac
    printf '%s\n' "$out"
    line=$(printf '%s\n' "$out" | grep -E "$summary_re" | tail -n1)
    if [ -z "$line" ]; then
        echo "$t: exited $rc without a summary line"
        failed=$((failed + 1))
        continue
    fi
    [[ $line =~ $summary_re ]]
    p=${BASH_REMATCH[2]} f=${BASH_REMATCH[3]} s=${BASH_REMATCH[5]}
    passed=$((passed + p))
    failed=$((failed + f))
    skipped=$((skipped + ${s:-0}))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "$t: exited $rc"
        failed=$((failed + 1))
    fi
done
echo
echo "total: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
