#!/usr/bin/env bash
# test/test_fuzz.sh: a bounded libFuzzer run of the vocabulary-file parser and the token-file
# reader, built with AddressSanitizer and UndefinedBehaviorSanitizer (any report aborts).
# FUZZ_SECONDS (default 15) is each fuzzer's time; both run at once, one per core.
# Without clang or libFuzzer's runtime (Debian: clang, libclang-rt-14-dev) its 5 checks are
# SKIPPED with one line saying what is missing; FUZZ_REQUIRE=1 (as `make fuzz` sets) fails instead.
set -u
cd "$(dirname "$0")/.."
passed=0
failed=0
skipped=0
CHECKS=5   # the runtime probe, two builds, two runs
ok()   { passed=$((passed + 1)); }
fail() { failed=$((failed + 1)); echo "FAIL: $*"; }
finish() {
    if [ "$skipped" -gt 0 ]; then echo "test_fuzz: $passed passed, $failed failed, $skipped skipped"
    else echo "test_fuzz: $passed passed, $failed failed"; fi
    [ "$failed" -eq 0 ]
    exit
}
# missing WHAT: a tool the fuzzers need is absent -- every check skipped (or one failure under
# FUZZ_REQUIRE=1).
missing() {
    if [ "${FUZZ_REQUIRE:-0}" = 1 ]; then fail "the fuzzers need $1"
    else skipped=$CHECKS; echo "skipped: $CHECKS checks need $1"; fi
    finish
}

CLANG=${CLANG:-clang}
SECONDS_EACH=${FUZZ_SECONDS:-15}
OUT=build/fuzz
ROOT=$(pwd)
FLAGS="-g -O1 -std=gnu11 -Wall -Wextra -I. -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all"
TOKENIZER_SRCS="tokenizer/bpe.c tokenizer/pretokenize.c tokenizer/vocab_file.c"

if ! command -v "$CLANG" >/dev/null 2>&1; then
    missing "$CLANG (not found; apt-get install clang libclang-rt-14-dev)"
fi
mkdir -p "$OUT"
work=$(mktemp -d /tmp/test_fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT

# libFuzzer's runtime present?
printf '#include <stddef.h>\n#include <stdint.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' >"$work/probe.c"
if ! "$CLANG" -fsanitize=fuzzer,address,undefined "$work/probe.c" -o "$work/probe" 2>"$work/probe.log"; then
    missing "libFuzzer's runtime ($CLANG cannot link -fsanitize=fuzzer; apt-get install libclang-rt-14-dev, or the libclang-rt-N-dev of clang N): $(head -n1 "$work/probe.log")"
fi
ok

build() { # NAME SOURCES...
    local name=$1; shift
    if $CLANG $FLAGS "$@" -o "$OUT/$name" 2>"$work/$name.build.log"; then ok
    else fail "building $name: $(grep -m1 -E 'error' "$work/$name.build.log")"; return 1; fi
}
build fuzz_vocab test/fuzz/fuzz_vocab.c $TOKENIZER_SRCS || finish
build fuzz_tokenfile test/fuzz/fuzz_tokenfile.c data/dataset.c $TOKENIZER_SRCS || finish

# Seeds: a real vocabulary and a real token file when ./tokenize is built, plus small ones.
mkdir -p "$work/vocab" "$work/tokens"
printf 'BPEVOCAB' >"$work/vocab/magic"
printf '\x88\xd8\x34\x01\x01\x00\x00\x00\x01\x00\x00\x00hi' >"$work/tokens/header_start"
if [ -x ./tokenize ]; then
    ./tokenize train --input tokenizer/tokenizer.h --vocab-size 320 --out "$work/vocab/small" --quiet >/dev/null 2>&1
    printf 'the cat sat\n' >"$work/text"
    ./tokenize encode --bytes --input "$work/text" --out "$work/tokens/bytes" --quiet >/dev/null 2>&1
    [ -f "$work/vocab/small" ] && ./tokenize encode --vocab "$work/vocab/small" --input "$work/text" \
        --out "$work/tokens/bpe" --quiet >/dev/null 2>&1
fi

run() { # NAME CORPUS
    (cd "$work" && "$ROOT/$OUT/$1" -max_total_time="$SECONDS_EACH" -max_len=4096 -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$work/$1-" "$work/$2" \
        >"$work/$1.log" 2>&1)
}
run fuzz_vocab vocab &
pid_vocab=$!
run fuzz_tokenfile tokens &
pid_tokens=$!
for pair in "fuzz_vocab:$pid_vocab" "fuzz_tokenfile:$pid_tokens"; do
    name=${pair%%:*}
    if wait "${pair#*:}"; then
        runs=$(grep -m1 -oE 'stat::number_of_executed_units: *[0-9]+' "$work/$name.log" | grep -oE '[0-9]+$')
        echo "$name: ${runs:-?} inputs in ${SECONDS_EACH}s, no crash, no sanitizer report"
        ok
    else
        fail "$name found a problem:"
        grep -E 'ERROR|SUMMARY|runtime error|deadly signal|Test unit written' "$work/$name.log" | head -n 8
        mkdir -p "$OUT/crashes" && cp "$work/$name"-* "$OUT/crashes/" 2>/dev/null
    fi
done
finish
