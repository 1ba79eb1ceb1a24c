#!/usr/bin/env bash
# test/run.sh: runs each test program or script given, shows its output, and ends with the grand
# total `N passed, N failed`. A program that crashes, or ends without its own summary line,
# counts as one failure. Exit status is non-zero when anything failed.
set -u
passed=0
failed=0
for t in "$@"; do
    case "$t" in
        *.sh) out=$(bash "$t" 2>&1); rc=$? ;;
        *)    out=$("$t" 2>&1); rc=$? ;;
    esac
    printf '%s\n' "$out"
    line=$(printf '%s\n' "$out" | grep -E '^([A-Za-z0-9_./-]+: )?[0-9]+ passed, [0-9]+ failed' | tail -n1)
    if [ -z "$line" ]; then
        echo "$t: exited $rc without a summary line"
        failed=$((failed + 1))
        continue
    fi
    p=$(printf '%s' "$line" | sed -E 's/^([A-Za-z0-9_./-]+: )?([0-9]+) passed, ([0-9]+) failed.*/\2/')
    f=$(printf '%s' "$line" | sed -E 's/^([A-Za-z0-9_./-]+: )?([0-9]+) passed, ([0-9]+) failed.*/\3/')
    passed=$((passed + p))
    failed=$((failed + f))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "$t: exited $rc"
        failed=$((failed + 1))
    fi
done
echo
echo "total: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
