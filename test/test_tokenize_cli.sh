#!/usr/bin/env bash
# test/test_tokenize_cli.sh: the ./tokenize command end to end.
# train -> encode -> decode gives back the exact bytes (text with NUL and invalid UTF-8 in it),
# for a BPE vocabulary and for --bytes; every bad input exits 2 with exactly one line on
# stderr and leaves no output file behind.
set -u
cd "$(dirname "$0")/.."
passed=0
failed=0
ok()   { passed=$((passed + 1)); }
fail() { failed=$((failed + 1)); echo "FAIL: $*"; }

TOK=${TOKENIZE:-./tokenize}
if [ ! -x "$TOK" ]; then
    echo "FAIL: $TOK not built (make tokenize)"
    echo "test_tokenize_cli: 0 passed, 1 failed"
    exit 1
fi
dir=$(mktemp -d /tmp/test_tokenize_cli.XXXXXX)
trap 'rm -rf "$dir"' EXIT

# expect_ok NAME CMD...: exit 0
expect_ok() {
    local name=$1; shift
    if "$@" >"$dir/out.txt" 2>"$dir/err.txt"; then ok; else fail "$name: exit $? ($(head -c 300 "$dir/err.txt"))"; fi
}
# expect_bad NAME PATTERN CMD...: exit 2, one line on stderr matching PATTERN, nothing on stdout
expect_bad() {
    local name=$1 pattern=$2; shift 2
    "$@" >"$dir/out.txt" 2>"$dir/err.txt"
    local rc=$? lines
    lines=$(wc -l <"$dir/err.txt")
    if [ "$rc" -ne 2 ]; then fail "$name: exit $rc, expected 2"; return; fi
    if [ "$lines" -ne 1 ]; then fail "$name: $lines lines on stderr"; cat "$dir/err.txt"; return; fi
    if ! grep -qiE -- "$pattern" "$dir/err.txt"; then fail "$name: message lacks /$pattern/: $(cat "$dir/err.txt")"; return; fi
    if [ -s "$dir/out.txt" ]; then fail "$name: printed on stdout"; return; fi
    ok
}

# --- a small corpus: repeated text, NUL bytes, invalid UTF-8, a long run ---------------------
for i in $(seq 1 300); do
    printf 'the cat sat on the mat %d times; the dog didn'"'"'t.\n' "$i"
    printf 'caf\xc3\xa9 \xff\xfe\x00\x00 broken \xc3 utf8 \x80\x80\t\n'
done >"$dir/corpus.txt"
head -c 3000 /dev/zero | tr '\0' ' ' >>"$dir/corpus.txt"
printf 'no newline at the end' >>"$dir/corpus.txt"

# --- help ---------------------------------------------------------------------------------------
expect_ok "--help" $TOK --help
grep -q "tokenize train" "$dir/out.txt" && ok || fail "--help lacks the train command"
expect_ok "train --help" $TOK train --help
grep -q -- "--vocab-size" "$dir/out.txt" && ok || fail "train --help lacks --vocab-size"

# --- train, encode, decode ----------------------------------------------------------------------
expect_ok "train" $TOK train --input "$dir/corpus.txt" --vocab-size 400 --out "$dir/vocab.bin" --quiet
[ -s "$dir/vocab.bin" ] && ok || fail "train wrote no vocabulary"
[ "$(head -c 8 "$dir/vocab.bin")" = "BPEVOCAB" ] && ok || fail "vocabulary magic"
expect_ok "info" $TOK info --vocab "$dir/vocab.bin"
grep -qE "^.*: [0-9]+ tokens" "$dir/out.txt" && ok || fail "info output: $(cat "$dir/out.txt")"
expect_ok "train again" $TOK train --input "$dir/corpus.txt" --vocab-size=400 --out="$dir/vocab2.bin" --quiet
cmp -s "$dir/vocab.bin" "$dir/vocab2.bin" && ok || fail "training is not deterministic"

expect_ok "encode" $TOK encode --vocab "$dir/vocab.bin" --input "$dir/corpus.txt" --out "$dir/tokens.bin" --quiet
size_text=$(stat -c %s "$dir/corpus.txt")
size_tok=$(stat -c %s "$dir/tokens.bin")
# an llm.c token file: 1024-byte header, then 2 bytes a token; BPE must use fewer tokens than bytes
[ $(( (size_tok - 1024) % 2 )) -eq 0 ] && [ $(( (size_tok - 1024) / 2 )) -lt "$size_text" ] && ok \
    || fail "token file size $size_tok for $size_text bytes of text"
expect_ok "decode" $TOK decode --vocab "$dir/vocab.bin" --input "$dir/tokens.bin" --out "$dir/decoded.txt"
cmp -s "$dir/corpus.txt" "$dir/decoded.txt" && ok || fail "BPE round trip differs"

expect_ok "encode --bytes" $TOK encode --bytes --input "$dir/corpus.txt" --out "$dir/bytes.bin" --quiet
[ "$(stat -c %s "$dir/bytes.bin")" -eq $((1024 + 2 * size_text)) ] && ok || fail "byte token file size"
expect_ok "decode --bytes" $TOK decode --bytes --input "$dir/bytes.bin" --out "$dir/decoded2.txt"
cmp -s "$dir/corpus.txt" "$dir/decoded2.txt" && ok || fail "byte round trip differs"

# random binary input round-trips too
head -c 20000 /dev/urandom >"$dir/random.bin"
expect_ok "encode random" $TOK encode --vocab "$dir/vocab.bin" --input "$dir/random.bin" --out "$dir/random.tok" --quiet
expect_ok "decode random" $TOK decode --vocab "$dir/vocab.bin" --input "$dir/random.tok" --out "$dir/random.dec"
cmp -s "$dir/random.bin" "$dir/random.dec" && ok || fail "random bytes round trip differs"

# --- bad usage and bad input: exit 2, one line ---------------------------------------------------
expect_bad "no command" "command" $TOK
expect_bad "unknown command" "unknown command" $TOK frobnicate
expect_bad "unknown option" "unknown option" $TOK train --colour red
expect_bad "missing value" "needs a value" $TOK encode --input
expect_bad "stray argument" "unexpected argument" $TOK info --vocab "$dir/vocab.bin" extra
expect_bad "missing --input" "--input is required" $TOK train --vocab-size 300 --out "$dir/v.bin"
expect_bad "missing --vocab-size" "--vocab-size is required" $TOK train --input "$dir/corpus.txt" --out "$dir/v.bin"
expect_bad "vocab too large" "uint16" $TOK train --input "$dir/corpus.txt" --vocab-size 65536 --out "$dir/v.bin"
expect_bad "vocab 50257*2" "uint16" $TOK train --input "$dir/corpus.txt" --vocab-size 100514 --out "$dir/v.bin"
expect_bad "vocab too small" "too small" $TOK train --input "$dir/corpus.txt" --vocab-size 100 --out "$dir/v.bin"
expect_bad "negative vocab" "too small" $TOK train --input "$dir/corpus.txt" --vocab-size -5 --out "$dir/v.bin"
expect_bad "directory as corpus" "directory" $TOK train --input "$dir" --vocab-size 300 --out "$dir/v.bin"
expect_bad "vocab not a number" "whole number" $TOK train --input "$dir/corpus.txt" --vocab-size 12k --out "$dir/v.bin"
expect_bad "missing corpus" "cannot open" $TOK train --input "$dir/nope.txt" --vocab-size 300 --out "$dir/v.bin"
[ ! -e "$dir/v.bin" ] && ok || fail "a failed train left $dir/v.bin"
expect_bad "output dir missing" "cannot write" $TOK train --input "$dir/corpus.txt" --vocab-size 300 --out "$dir/no/such/dir/v.bin" --quiet

expect_bad "missing vocab" "cannot open" $TOK encode --vocab "$dir/nope.bin" --input "$dir/corpus.txt" --out "$dir/t.bin"
expect_bad "vocab and bytes" "not both" $TOK encode --vocab "$dir/vocab.bin" --bytes --input "$dir/corpus.txt" --out "$dir/t.bin"
expect_bad "neither vocab nor bytes" "vocab" $TOK encode --input "$dir/corpus.txt" --out "$dir/t.bin"
head -c 20 "$dir/vocab.bin" >"$dir/short.bin"
expect_bad "truncated vocab" "truncated" $TOK encode --vocab "$dir/short.bin" --input "$dir/corpus.txt" --out "$dir/t.bin"
head -c $(( $(stat -c %s "$dir/vocab.bin") - 6 )) "$dir/vocab.bin" >"$dir/short2.bin"
expect_bad "vocab cut mid-merges" "truncated" $TOK decode --vocab "$dir/short2.bin" --input "$dir/tokens.bin" --out "$dir/t.txt"
cp "$dir/vocab.bin" "$dir/corrupt.bin"
printf '\x7f' | dd of="$dir/corrupt.bin" bs=1 seek=40 conv=notrunc 2>/dev/null
expect_bad "corrupt vocab" "corrupt|invalid" $TOK encode --vocab "$dir/corrupt.bin" --input "$dir/corpus.txt" --out "$dir/t.bin"
expect_bad "text as vocab" "magic|truncated" $TOK info --vocab "$dir/corpus.txt"
expect_bad "missing text" "cannot open" $TOK encode --bytes --input "$dir/nope.txt" --out "$dir/t.bin"
: >"$dir/empty.txt"
expect_bad "empty text" "empty" $TOK encode --bytes --input "$dir/empty.txt" --out "$dir/t.bin"
[ ! -e "$dir/t.bin" ] && ok || fail "a failed encode left $dir/t.bin"

expect_bad "decode a text file" "not a token file" $TOK decode --bytes --input "$dir/corpus.txt" --out "$dir/t.txt"
expect_bad "decode missing file" "cannot open" $TOK decode --bytes --input "$dir/nope.bin" --out "$dir/t.txt"
expect_bad "ids beyond vocab" "outside the vocabulary" $TOK decode --bytes --input "$dir/tokens.bin" --out "$dir/t.txt"
head -c 2000 "$dir/tokens.bin" >"$dir/short.tok"
expect_bad "truncated token file" "truncated" $TOK decode --vocab "$dir/vocab.bin" --input "$dir/short.tok" --out "$dir/t.txt"
[ ! -e "$dir/t.txt" ] && ok || fail "a failed decode left $dir/t.txt"
ls "$dir" | grep -q '\.tmp' && fail "temporary files left: $(ls "$dir" | grep '\.tmp')" || ok

# --- outputs that are not plain files: FIFOs, symbolic links, devices, directories --------------
# Atomic write-and-rename is for regular files: a FIFO or device is written in place, a link is
# followed and its target replaced, the link kept. Every FIFO reader and writer runs under
# timeout so that a regression fails instead of hanging.
cp "$dir/tokens.bin" "$dir/want.tok"  # the encode output every case below must reproduce
out_ok=1                              # cleared by a failed FIFO/link case (guards /dev/null)
# fifo_out NAME WANT CMD...: CMD writes to $dir/fifo while a reader copies it to $dir/fifo.got;
# exit 0, the FIFO still a FIFO, the reader got exactly WANT
fifo_out() {
    local name=$1 want=$2; shift 2
    rm -f "$dir/fifo" "$dir/fifo.got"; mkfifo "$dir/fifo"
    timeout 10 cat "$dir/fifo" >"$dir/fifo.got" 2>/dev/null &
    local reader=$!
    timeout 10 "$@" >"$dir/out.txt" 2>"$dir/err.txt"
    local rc=$?
    if [ -p "$dir/fifo" ]; then wait "$reader"; else kill "$reader" 2>/dev/null; wait "$reader" 2>/dev/null; fi
    if [ "$rc" -ne 0 ]; then fail "$name: exit $rc ($(head -c 300 "$dir/err.txt"))"; out_ok=0
    elif [ ! -p "$dir/fifo" ]; then fail "$name: the FIFO was replaced by $(stat -c %F "$dir/fifo")"; out_ok=0
    elif ! cmp -s "$want" "$dir/fifo.got"; then fail "$name: the reader got other bytes"; out_ok=0
    else ok; fi
}
fifo_out "encode --out FIFO" "$dir/want.tok" $TOK encode --vocab "$dir/vocab.bin" --input "$dir/corpus.txt" --out "$dir/fifo" --quiet
fifo_out "decode --out FIFO" "$dir/corpus.txt" $TOK decode --vocab "$dir/vocab.bin" --input "$dir/want.tok" --out "$dir/fifo"
fifo_out "train --out FIFO" "$dir/vocab.bin" $TOK train --input "$dir/corpus.txt" --vocab-size 400 --out "$dir/fifo" --quiet

# a reader that leaves early: one line and exit 2 (EPIPE), not a silent death by SIGPIPE
head -c 200000 /dev/urandom >"$dir/big.bin"
rm -f "$dir/fifo"; mkfifo "$dir/fifo"
timeout 10 head -c 10 "$dir/fifo" >/dev/null &
reader=$!
expect_bad "FIFO reader gone" "broken pipe" timeout 10 $TOK encode --bytes --input "$dir/big.bin" --out "$dir/fifo" --quiet
wait "$reader"

# link_out NAME LINK TARGET WANT CMD...: exit 0, LINK still a symbolic link, TARGET holds WANT
link_out() {
    local name=$1 link=$2 target=$3 want=$4; shift 4
    if ! timeout 10 "$@" >"$dir/out.txt" 2>"$dir/err.txt"; then fail "$name: exit $? ($(head -c 300 "$dir/err.txt"))"; out_ok=0
    elif [ ! -L "$link" ]; then fail "$name: the link was replaced by $(stat -c %F "$link")"; out_ok=0
    elif ! cmp -s "$want" "$target"; then fail "$name: the link's target does not hold the output"; out_ok=0
    else ok; fi
}
echo old >"$dir/real.tok"; ln -s real.tok "$dir/link.tok"
link_out "encode --out link" "$dir/link.tok" "$dir/real.tok" "$dir/want.tok" \
    $TOK encode --vocab "$dir/vocab.bin" --input "$dir/corpus.txt" --out "$dir/link.tok" --quiet
mkdir -p "$dir/sub" "$dir/other"; echo old >"$dir/other/real.txt"
ln -s ../other/real.txt "$dir/sub/mid.txt"; ln -s mid.txt "$dir/sub/link.txt"   # a relative chain
link_out "decode --out relative link chain" "$dir/sub/link.txt" "$dir/other/real.txt" "$dir/corpus.txt" \
    $TOK decode --vocab "$dir/vocab.bin" --input "$dir/want.tok" --out "$dir/sub/link.txt"
[ -L "$dir/sub/mid.txt" ] && ok || fail "the middle link of a chain was replaced"
ln -s new_vocab.bin "$dir/dangling.bin"
link_out "train --out dangling link" "$dir/dangling.bin" "$dir/new_vocab.bin" "$dir/vocab.bin" \
    $TOK train --input "$dir/corpus.txt" --vocab-size 400 --out "$dir/dangling.bin" --quiet
ls "$dir" "$dir/sub" "$dir/other" | grep -q '\.tmp' && fail "temporary files left by link outputs" || ok
ln -s loop_b "$dir/loop_a"; ln -s loop_a "$dir/loop_b"
expect_bad "--out link loop" "symbolic links" $TOK encode --bytes --input "$dir/corpus.txt" --out "$dir/loop_a"
expect_bad "--out directory" "is a directory" $TOK encode --bytes --input "$dir/corpus.txt" --out "$dir/sub"
expect_bad "--out empty" "empty" $TOK encode --bytes --input "$dir/corpus.txt" --out ""

# /dev/null, /dev/stdout, /dev/full last, and only when the FIFO and link cases passed: a build
# that renames over special files would replace the machine's own with regular files as root
if [ "$out_ok" -eq 1 ]; then
    expect_ok "encode --out /dev/null" $TOK encode --bytes --input "$dir/corpus.txt" --out /dev/null --quiet
    [ -c /dev/null ] && ok || fail "/dev/null is no longer a character device"
    expect_ok "decode --out /dev/null" $TOK decode --vocab "$dir/vocab.bin" --input "$dir/want.tok" --out /dev/null
    [ -c /dev/null ] && ok || fail "/dev/null is no longer a character device"
    # /dev/stdout onto a pipe: its link text "pipe:[N]" names no file; written in place
    if timeout 10 $TOK encode --bytes --input "$dir/corpus.txt" --out /dev/stdout --quiet 2>"$dir/err.txt" | cmp -s - "$dir/bytes.bin"; then ok
    else fail "encode --out /dev/stdout into a pipe: $(head -c 300 "$dir/err.txt")"; fi
    [ -L /dev/stdout ] && ok || fail "/dev/stdout is no longer a symbolic link"
    # /dev/stdout appended to a file: written through the descriptor, the file not replaced
    echo "kept line" >"$dir/appended"
    timeout 10 $TOK encode --bytes --input "$dir/corpus.txt" --out /dev/stdout --quiet >>"$dir/appended" 2>"$dir/err.txt"
    { echo "kept line"; cat "$dir/bytes.bin"; } | cmp -s - "$dir/appended" && ok \
        || fail "--out /dev/stdout >> file did not append: $(head -c 300 "$dir/err.txt")"
    expect_bad "--out closed /dev/fd/9" "not open" $TOK encode --bytes --input "$dir/corpus.txt" --out /dev/fd/9
    # a full device: one line, exit 2, the device still a device
    expect_bad "--out /dev/full" "no space" $TOK encode --bytes --input "$dir/corpus.txt" --out /dev/full --quiet
    [ -c /dev/full ] && ok || fail "/dev/full is no longer a character device"
else
    fail "--out /dev/null, /dev/stdout, /dev/full not tried: the FIFO or link cases failed, so they could be replaced"
fi

# --- inputs that are not plain files: refused at once, not read forever -------------------------
rm -f "$dir/fifo"; mkfifo "$dir/fifo"
expect_bad "FIFO as encode --vocab" "not a regular file" timeout 10 $TOK encode --vocab "$dir/fifo" --input "$dir/corpus.txt" --out "$dir/t.bin"
expect_bad "FIFO as decode --vocab" "not a regular file" timeout 10 $TOK decode --vocab "$dir/fifo" --input "$dir/want.tok" --out "$dir/t.txt"
expect_bad "FIFO as info --vocab" "not a regular file" timeout 10 $TOK info --vocab "$dir/fifo"
expect_bad "FIFO as encode --input" "not a regular file" timeout 10 $TOK encode --bytes --input "$dir/fifo" --out "$dir/t.bin"
expect_bad "FIFO as train --input" "not a regular file" timeout 10 $TOK train --input "$dir/fifo" --vocab-size 300 --out "$dir/v.bin"
expect_bad "FIFO as decode --input" "not a regular file" timeout 10 $TOK decode --bytes --input "$dir/fifo" --out "$dir/t.txt"
[ ! -e "$dir/t.bin" ] && [ ! -e "$dir/t.txt" ] && [ ! -e "$dir/v.bin" ] && ok || fail "a refused FIFO input left an output"

# --- --out naming an input (also through a link), or a corpus that would replace a good
# vocabulary with an empty one: refused, the files untouched -----------------
cp "$dir/corpus.txt" "$dir/keep.txt"; cp "$dir/want.tok" "$dir/keep.tok"; cp "$dir/vocab.bin" "$dir/keep.bin"
ln -s keep.txt "$dir/keep_link.txt"; ln "$dir/keep.tok" "$dir/keep_hard.tok"
expect_bad "decode --out = --input" "same file" $TOK decode --vocab "$dir/keep.bin" --input "$dir/keep.tok" --out "$dir/keep.tok"
expect_bad "decode --out hard link to --input" "same file" $TOK decode --vocab "$dir/keep.bin" --input "$dir/keep.tok" --out "$dir/keep_hard.tok"
expect_bad "decode --out = --vocab" "same file" $TOK decode --vocab "$dir/keep.bin" --input "$dir/keep.tok" --out "$dir/keep.bin"
expect_bad "encode --out = --input" "same file" $TOK encode --vocab "$dir/keep.bin" --input "$dir/keep.txt" --out "$dir/keep.txt"
expect_bad "encode --out link to --input" "same file" $TOK encode --vocab "$dir/keep.bin" --input "$dir/keep.txt" --out "$dir/keep_link.txt"
expect_bad "encode --out = --vocab" "same file" $TOK encode --vocab "$dir/keep.bin" --input "$dir/keep.txt" --out "$dir/keep.bin"
expect_bad "train --out = --input" "same file" $TOK train --input "$dir/keep.txt" --vocab-size 300 --out "$dir/keep_link.txt" --quiet
expect_bad "train on an empty corpus" "empty" $TOK train --input "$dir/empty.txt" --vocab-size 300 --out "$dir/keep.bin" --quiet
cmp -s "$dir/keep.txt" "$dir/corpus.txt" && cmp -s "$dir/keep.tok" "$dir/want.tok" && cmp -s "$dir/keep.bin" "$dir/vocab.bin" \
    && [ -L "$dir/keep_link.txt" ] && ok || fail "an input named as --out was changed"

echo "test_tokenize_cli: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
