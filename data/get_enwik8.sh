#!/usr/bin/env bash
# data/get_enwik8.sh (`make enwik8`): fetches enwik8 and splits it, in order, into
#   data/enwik8/enwik8.train  the first 90,000,000 bytes
#   data/enwik8/enwik8.val    the next   5,000,000 bytes
#   data/enwik8/enwik8.test   the last   5,000,000 bytes
# after checking the unzipped file is 100,000,000 bytes with MD5 a1fa5ffddb56f4953e226637dabbb36a.
# If the three parts already exist it says so and does nothing. On any failure it prints one line
# on stderr, exits non-zero and leaves no partial output: everything is written into a temporary
# folder beside the outputs and renamed into place at the end.
#
# Environment (for offline machines and the tests):
#   ENWIK8_ZIP           a local enwik8.zip to use instead of downloading
#   ENWIK8_URL           where to download it (default http://mattmahoney.net/dc/enwik8.zip)
#   ENWIK8_DIR           the output folder (default: data/enwik8 beside this script)
#   ENWIK8_EXPECT_BYTES  the unzipped size to insist on (default 100000000); the split is always
#                        90% / 5% / 5% of it, rounded down at each cut as dataset_split() does
#   ENWIK8_EXPECT_MD5    the MD5 to insist on (default a1fa5ffddb56f4953e226637dabbb36a)
#   ENWIK8_NO_UNZIP=1    unzip with python3's zipfile even where `unzip` is installed
set -u

url=${ENWIK8_URL:-http://mattmahoney.net/dc/enwik8.zip}
dir=${ENWIK8_DIR:-$(dirname "$0")/enwik8}
expect_bytes=${ENWIK8_EXPECT_BYTES:-100000000}
expect_md5=${ENWIK8_EXPECT_MD5:-a1fa5ffddb56f4953e226637dabbb36a}
parts=(train val test)

work=""
created_dir=0
placed=()
finished=0

die() {
    echo "get_enwik8: $*" >&2
    exit 1
}

# On any exit short of success: remove the temporary folder, any part already renamed into
# place by this run, and the output folder if this run created it and it is empty.
cleanup() {
    [ -n "$work" ] && rm -rf "$work"
    if [ "$finished" -ne 1 ]; then
        for f in "${placed[@]+"${placed[@]}"}"; do rm -f "$f"; done
        [ "$created_dir" -eq 1 ] && rmdir "$dir" 2>/dev/null
    fi
    return 0
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

# The last line a failed command printed, for a one-line message.
last_line() { tail -n 1 "$1" 2>/dev/null | tr -d '\r'; }

file_size() { wc -c < "$1" | tr -d ' '; }

all_parts_exist() {
    for p in "${parts[@]}"; do [ -f "$dir/enwik8.$p" ] || return 1; done
    return 0
}

download() {  # download URL DEST
    if command -v curl >/dev/null 2>&1; then
        curl -fsSL --retry 3 -o "$2" "$1" 2>"$work/log" || die "download of $1 failed: $(last_line "$work/log")"
    elif command -v wget >/dev/null 2>&1; then
        wget -q -O "$2" "$1" 2>"$work/log" || die "download of $1 failed (wget): $(last_line "$work/log")"
    else
        die "neither curl nor wget is installed; download $1 yourself and set ENWIK8_ZIP"
    fi
}

extract_enwik8() {  # extract_enwik8 ZIP DEST: the zip's member `enwik8`
    if [ "${ENWIK8_NO_UNZIP:-0}" != 1 ] && command -v unzip >/dev/null 2>&1; then
        unzip -p "$1" enwik8 > "$2" 2>"$work/log" || die "cannot unzip enwik8 from $1: $(last_line "$work/log")"
    elif command -v python3 >/dev/null 2>&1; then
        python3 - "$1" "$2" 2>"$work/log" <<'EOF' || die "cannot unzip enwik8 from $1: $(last_line "$work/log")"
import shutil, sys, zipfile
try:
    with zipfile.ZipFile(sys.argv[1]) as z, z.open("enwik8") as src, open(sys.argv[2], "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
except Exception as e:
    sys.exit(f"{type(e).__name__}: {e}")
EOF
    else
        die "neither unzip nor python3 is installed; cannot unzip $1"
    fi
}

md5_of() {
    if command -v md5sum >/dev/null 2>&1; then
        md5sum "$1" | cut -d' ' -f1
    else
        python3 -c 'import hashlib,sys; print(hashlib.md5(open(sys.argv[1],"rb").read()).hexdigest())' "$1"
    fi
}

# --- checks before any work -------------------------------------------------------------------
case "$expect_bytes" in
    ''|*[!0-9]*) die "ENWIK8_EXPECT_BYTES must be a whole number of bytes, not '$expect_bytes'" ;;
esac
[ "$expect_bytes" -gt 0 ] || die "ENWIK8_EXPECT_BYTES must be positive"
expect_md5=$(printf '%s' "$expect_md5" | tr 'A-F' 'a-f')
case "$expect_md5" in
    *[!0-9a-f]*) die "ENWIK8_EXPECT_MD5 must be 32 hex digits, not '$expect_md5'" ;;
esac
[ ${#expect_md5} -eq 32 ] || die "ENWIK8_EXPECT_MD5 must be 32 hex digits, not '$expect_md5'"

if all_parts_exist; then
    echo "get_enwik8: $dir/enwik8.train, .val and .test already exist; nothing to do"
    exit 0
fi
if [ -n "${ENWIK8_ZIP:-}" ] && [ ! -f "$ENWIK8_ZIP" ]; then
    die "ENWIK8_ZIP=$ENWIK8_ZIP is not a file"
fi

if [ ! -d "$dir" ]; then
    mkdir -p "$dir" 2>/dev/null || die "cannot create $dir"
    created_dir=1
fi
work=$(mktemp -d "$dir/.get_enwik8.XXXXXX" 2>/dev/null) || { work=""; die "cannot create a temporary folder in $dir"; }

# --- fetch, unzip, verify ---------------------------------------------------------------------
if [ -n "${ENWIK8_ZIP:-}" ]; then
    zip=$ENWIK8_ZIP
    echo "get_enwik8: using $zip"
else
    zip=$work/enwik8.zip
    echo "get_enwik8: downloading $url"
    download "$url" "$zip"
fi

echo "get_enwik8: unzipping"
extract_enwik8 "$zip" "$work/enwik8"

size=$(file_size "$work/enwik8")
[ "$size" = "$expect_bytes" ] || die "unzipped enwik8 is $size bytes, expected $expect_bytes"
md5=$(md5_of "$work/enwik8")
[ "$md5" = "$expect_md5" ] || die "unzipped enwik8 has MD5 $md5, expected $expect_md5"

# --- split 90% / 5% / 5% ------------------------------------------------------------------------
train_end=$((expect_bytes * 9 / 10))
val_end=$((expect_bytes * 95 / 100))
sizes=("$train_end" "$((val_end - train_end))" "$((expect_bytes - val_end))")

echo "get_enwik8: splitting into ${sizes[0]} / ${sizes[1]} / ${sizes[2]} bytes"
src=$work/enwik8
head -c "${sizes[0]}" "$src" > "$work/enwik8.train" || die "cannot write the train part in $dir"
tail -c +"$((train_end + 1))" "$src" | head -c "${sizes[1]}" > "$work/enwik8.val" || die "cannot write the val part in $dir"
tail -c "${sizes[2]}" "$src" > "$work/enwik8.test" || die "cannot write the test part in $dir"
for i in 0 1 2; do
    f=$work/enwik8.${parts[$i]}
    got=$(file_size "$f")
    [ "$got" = "${sizes[$i]}" ] || die "enwik8.${parts[$i]} came out $got bytes, expected ${sizes[$i]}"
done

for p in "${parts[@]}"; do
    mv -f "$work/enwik8.$p" "$dir/enwik8.$p" 2>/dev/null || die "cannot move enwik8.$p into $dir"
    placed+=("$dir/enwik8.$p")
done
finished=1
echo "get_enwik8: wrote $dir/enwik8.train, .val, .test"
