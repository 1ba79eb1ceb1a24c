# test/harness.sh: what the shell tests share, sourced after `cd` to the repo root: the counters,
# ok / bad, and pycheck (one check run by python3, counted as skipped where python3 is missing).
# Each script prints its own closing line "NAME: P passed, F failed, S skipped" (test/run.sh adds
# them up).
passed=0
failed=0
skipped=0
ok()  { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
# pycheck WHAT ARGS...: python3 ARGS with the script on stdin
HAVE_PY=$(command -v python3 >/dev/null 2>&1 && echo 1)
pycheck() {
    local what=$1; shift
    if [ -z "$HAVE_PY" ]; then skipped=$((skipped + 1)); cat >/dev/null; return 0; fi
    python3 "$@" && ok || bad "$what"
}
