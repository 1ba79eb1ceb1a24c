#!/usr/bin/env bash
# test/test_enwik8_script.sh: data/get_enwik8.sh on a small fake enwik8.zip made here (no network):
# the 90/5/5 split sizes and contents, both unzip paths, the "already there" case, the download
# path through a file:// URL, and that every failure (wrong MD5 or size, missing or broken zip,
# bad settings) exits non-zero with one line on stderr and leaves no output behind.
# Optional tools: making the fake zip needs python3 or zip, and the script needs unzip or python3
# to read it (without them all 35 checks are skipped); the python3-only checks (4) and the
# download checks (curl, 4) are skipped without those; each skip counts as skipped.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
script=$root/data/get_enwik8.sh
name=test_enwik8_script
passed=0
failed=0
skipped=0
ALL_CHECKS=35
skip() {  # skip N WHY
    skipped=$((skipped + $1))
    echo "skipped: $1 checks need $2"
}
summary() { echo "$name: $passed passed, $failed failed, $skipped skipped"; }
have() { command -v "$1" >/dev/null 2>&1; }

check() {  # check DESCRIPTION COMMAND...
    local what=$1
    shift
    if "$@"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "FAIL: $what"
    fi
}

tmp=$(mktemp -d /tmp/test_enwik8_XXXXXX) || { echo "$name: cannot make a temp dir"; echo "$name: 0 passed, 1 failed"; exit 1; }
trap 'rm -rf "$tmp"' EXIT

# make_zip SRC ZIP MEMBER: a deflated zip holding SRC under the name MEMBER.
make_zip() {
    if command -v python3 >/dev/null 2>&1; then
        python3 - "$@" <<'EOF'
import sys, zipfile
src, dst, member = sys.argv[1:4]
with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as z:
    z.write(src, member)
EOF
    elif command -v zip >/dev/null 2>&1; then
        local d
        d=$(mktemp -d "$tmp/zip.XXXXXX") && cp "$1" "$d/$3" && (cd "$d" && zip -q "$2" "$3")
    else
        return 1
    fi
}

if ! have python3 && ! have zip; then
    skip "$ALL_CHECKS" "python3 or zip to make a test zip (neither is installed; apt-get install zip unzip)"
    summary
    exit 0
fi
if ! have python3 && ! have unzip; then
    skip "$ALL_CHECKS" "unzip or python3 for data/get_enwik8.sh to read a zip (neither is installed; apt-get install unzip)"
    summary
    exit 0
fi

# A fake corpus of awkward size: the cuts at 90% and 95% fall inside bytes.
n=200003
head -c "$n" /dev/urandom > "$tmp/enwik8"
md5=$(md5sum "$tmp/enwik8" | cut -d' ' -f1)
make_zip "$tmp/enwik8" "$tmp/fake.zip" enwik8 || { echo "$name: 0 passed, 1 failed (cannot make a zip)"; exit 1; }
train=$((n * 9 / 10))
val=$((n * 95 / 100 - train))
test_=$((n - n * 95 / 100))

# run_script OUTDIR [VAR=VALUE...]: runs the script with the fake's settings plus overrides;
# sets rc, and keeps stdout/stderr in $tmp/out, $tmp/err.
run_script() {
    local out=$1
    shift
    env ENWIK8_ZIP="$tmp/fake.zip" ENWIK8_DIR="$out" ENWIK8_EXPECT_BYTES="$n" \
        ENWIK8_EXPECT_MD5="$md5" ENWIK8_URL="file:///nonexistent/enwik8.zip" "$@" \
        bash "$script" > "$tmp/out" 2> "$tmp/err"
    rc=$?
}

size_is() { [ -f "$1" ] && [ "$(wc -c < "$1" | tr -d ' ')" = "$2" ]; }

# The three parts have the right sizes and concatenate back to the original; nothing else is left.
good_split() {
    local out=$1
    size_is "$out/enwik8.train" "$train" && size_is "$out/enwik8.val" "$val" &&
        size_is "$out/enwik8.test" "$test_" &&
        cat "$out/enwik8.train" "$out/enwik8.val" "$out/enwik8.test" | cmp -s - "$tmp/enwik8" &&
        [ "$(ls -A "$out" | wc -l)" -eq 3 ]
}

one_line_error() { [ "$rc" -ne 0 ] && [ "$(wc -l < "$tmp/err")" -eq 1 ] && grep -q '^get_enwik8: ' "$tmp/err"; }

no_outputs() {  # the folder is gone, or holds nothing but what was there before
    local out=$1
    [ ! -e "$out" ] || [ -z "$(ls -A "$out" | grep -v '^keep$')" ]
}

# --- success paths -------------------------------------------------------------------------
run_script "$tmp/out1"
check "fake enwik8 splits (rc $rc: $(cat "$tmp/err"))" [ "$rc" -eq 0 ]
check "parts are $train / $val / $test_ bytes and concatenate to the original" good_split "$tmp/out1"
check "nothing on stderr on success" [ ! -s "$tmp/err" ]

before=$(md5sum "$tmp/out1"/enwik8.* | md5sum)
run_script "$tmp/out1" ENWIK8_EXPECT_MD5=00000000000000000000000000000000
check "second run sees the parts and stops (rc $rc)" [ "$rc" -eq 0 ]
check "second run says they already exist" grep -q 'already exist' "$tmp/out"
check "second run leaves the parts alone" [ "$before" = "$(md5sum "$tmp/out1"/enwik8.* | md5sum)" ]

if have python3; then
    run_script "$tmp/out2" ENWIK8_NO_UNZIP=1
    check "python3 zipfile path (rc $rc: $(cat "$tmp/err"))" [ "$rc" -eq 0 ]
    check "python3 zipfile path splits the same" good_split "$tmp/out2"
fi

run_script "$tmp/out3" ENWIK8_EXPECT_MD5="$(printf '%s' "$md5" | tr 'a-f' 'A-F')"
check "MD5 in upper case is accepted (rc $rc)" [ "$rc" -eq 0 ]

# exactly 90 / 5 / 5 on a round size
head -c 1000 /dev/urandom > "$tmp/small"
make_zip "$tmp/small" "$tmp/small.zip" enwik8
env ENWIK8_ZIP="$tmp/small.zip" ENWIK8_DIR="$tmp/out4" ENWIK8_EXPECT_BYTES=1000 \
    ENWIK8_EXPECT_MD5="$(md5sum "$tmp/small" | cut -d' ' -f1)" bash "$script" >/dev/null 2>&1
check "1000 bytes split 900 / 50 / 50" eval 'size_is "$tmp/out4/enwik8.train" 900 &&
    size_is "$tmp/out4/enwik8.val" 50 && size_is "$tmp/out4/enwik8.test" 50'

# the download path, through curl's file:// support
if have curl; then
    run_script "$tmp/out5" ENWIK8_ZIP= ENWIK8_URL="file://$tmp/fake.zip"
    check "download path (file:// URL) works (rc $rc: $(cat "$tmp/err"))" [ "$rc" -eq 0 ]
    check "download path splits right and keeps no zip" good_split "$tmp/out5"
    run_script "$tmp/out6" ENWIK8_ZIP= ENWIK8_URL="file://$tmp/no_such.zip"
    check "failed download: one line, non-zero" one_line_error
    check "failed download leaves nothing" no_outputs "$tmp/out6"
else
    skip 4 "curl for the download path (not installed; apt-get install curl)"
fi

# --- failures: one line on stderr, non-zero, no outputs ---------------------------------------
expect_failure() {  # expect_failure DESCRIPTION OUTDIR [VAR=VALUE...]
    local what=$1 out=$2
    shift 2
    run_script "$out" "$@"
    check "$what: exits non-zero with one line (rc $rc: $(head -c 300 "$tmp/err"))" one_line_error
    check "$what: leaves no outputs ($(ls -A "$out" 2>/dev/null | tr '\n' ' '))" no_outputs "$out"
}

expect_failure "wrong MD5" "$tmp/bad1" ENWIK8_EXPECT_MD5=0123456789abcdef0123456789abcdef
check "wrong MD5 message says MD5" grep -q 'MD5' "$tmp/err"
expect_failure "wrong size" "$tmp/bad2" ENWIK8_EXPECT_BYTES=$((n + 1))
expect_failure "missing zip" "$tmp/bad3" ENWIK8_ZIP="$tmp/none.zip"
head -c 5000 /dev/urandom > "$tmp/garbage.zip"
expect_failure "corrupt zip" "$tmp/bad4" ENWIK8_ZIP="$tmp/garbage.zip"
make_zip "$tmp/enwik8" "$tmp/wrong_member.zip" enwik9
expect_failure "zip without enwik8 (unzip)" "$tmp/bad5" ENWIK8_ZIP="$tmp/wrong_member.zip"
if have python3; then
    expect_failure "zip without enwik8 (python3)" "$tmp/bad6" ENWIK8_ZIP="$tmp/wrong_member.zip" ENWIK8_NO_UNZIP=1
fi
expect_failure "bad byte count setting" "$tmp/bad7" ENWIK8_EXPECT_BYTES=12abc
expect_failure "bad MD5 setting" "$tmp/bad8" ENWIK8_EXPECT_MD5=xyz

# a folder that existed before a failure keeps what it had, and stays
mkdir -p "$tmp/bad9"
echo hello > "$tmp/bad9/keep"
expect_failure "wrong MD5 into an existing folder" "$tmp/bad9" ENWIK8_EXPECT_MD5=0123456789abcdef0123456789abcdef
check "existing folder and its file survive a failure" [ -f "$tmp/bad9/keep" ]

# one part missing: the script redoes the split instead of stopping
rm "$tmp/out1/enwik8.val"
run_script "$tmp/out1"
check "a missing part is regenerated (rc $rc)" good_split "$tmp/out1"

have python3 || skip 4 "python3 for the zipfile path (not installed; apt-get install python3)"
summary
[ "$failed" -eq 0 ]
