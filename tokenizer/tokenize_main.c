/* tokenizer/tokenize_main.c: the ./tokenize command.
 *
 *   tokenize train  --input TEXT --vocab-size N --out VOCAB [--max-chunks N] [--min-count N] [--quiet]
 *   tokenize encode (--vocab VOCAB | --bytes) --input TEXT --out TOKENS.bin
 *   tokenize decode (--vocab VOCAB | --bytes) --input TOKENS.bin --out TEXT
 *   tokenize info   --vocab VOCAB [--list]
 *
 * Errors are one line on stderr and exit status 2. Inputs must be regular files (a FIFO would
 * hang the read). Outputs go through tokenizer/out_file.h: a regular file is written to a
 * temporary renamed into place (next to the final target of a symbolic link), so a failed run
 * never leaves a half-written file under the asked name; a device or FIFO (/dev/null) is written
 * in place, never replaced; a directory, or an --out that is the same file as --input or --vocab,
 * is refused before any work.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/regular_file.h"
#include "data/dataset.h"
#include "tokenizer/out_file.h"
#include "tokenizer/pretokenize.h"
#include "tokenizer/tokenizer.h"

#define EXIT_BAD 2

static const char USAGE[] =
    "usage: tokenize COMMAND [options]\n"
    "\n"
    "Byte-level BPE for the GPT-2 trainer: learn merges, turn text into an llm.c token file\n"
    "(uint16 tokens behind a 1024-byte header) and back.\n"
    "\n"
    "  tokenize train  --input TEXT --vocab-size N --out VOCAB\n"
    "                  [--max-chunks N] [--min-count N] [--quiet]\n"
    "      learn N - 256 merges from TEXT (streamed), 256 <= N <= 65535\n"
    "      --max-chunks N  distinct chunks kept in memory before rare ones are dropped\n"
    "                      (default 2097152)\n"
    "      --min-count N   stop early when the best pair occurs fewer than N times (default 2)\n"
    "  tokenize encode (--vocab VOCAB | --bytes) --input TEXT --out TOKENS.bin\n"
    "      write TEXT's tokens as an llm.c token file; --bytes: one token per byte\n"
    "  tokenize decode (--vocab VOCAB | --bytes) --input TOKENS.bin --out TEXT\n"
    "      write the bytes the tokens stand for\n"
    "  tokenize info   --vocab VOCAB [--list]\n"
    "      vocabulary size and longest token; --list prints every token, escaped\n"
    "\n"
    "Inputs must be regular files. --out: a regular file is replaced whole (temporary + rename),\n"
    "a symbolic link's target is replaced and the link kept, a device or FIFO (/dev/null) is\n"
    "written in place; a directory, or the same file as --input or --vocab, is refused.\n"
    "Every command takes --help. Errors: one line on stderr, exit status 2.\n";

typedef struct {
    const char *input, *out, *vocab;
    long long vocab_size;
    long long max_chunks, min_count;
    int have_vocab_size, bytes, quiet, list, help;
} Args;

__attribute__((noreturn, format(printf, 1, 2)))
static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "tokenize: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(EXIT_BAD);
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* A whole decimal number in [lo, hi], or a one-line error naming the option. */
static long long parse_number(const char *opt, const char *s, long long lo, long long hi) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno == ERANGE)
        die("--%s wants a whole number, got '%s'", opt, s);
    if (v < lo || v > hi) die("--%s %lld outside %lld..%lld", opt, v, lo, hi);
    return v;
}

enum { OPT_INPUT = 1, OPT_OUT, OPT_VOCAB, OPT_VOCAB_SIZE, OPT_MAX_CHUNKS, OPT_MIN_COUNT,
       OPT_BYTES, OPT_QUIET, OPT_LIST, OPT_HELP };

static void parse_args(const char *command, int argc, char **argv, Args *a) {
    static const struct option options[] = {
        {"input", required_argument, 0, OPT_INPUT},
        {"out", required_argument, 0, OPT_OUT},
        {"vocab", required_argument, 0, OPT_VOCAB},
        {"vocab-size", required_argument, 0, OPT_VOCAB_SIZE},
        {"max-chunks", required_argument, 0, OPT_MAX_CHUNKS},
        {"min-count", required_argument, 0, OPT_MIN_COUNT},
        {"bytes", no_argument, 0, OPT_BYTES},
        {"quiet", no_argument, 0, OPT_QUIET},
        {"list", no_argument, 0, OPT_LIST},
        {"help", no_argument, 0, OPT_HELP},
        {0, 0, 0, 0},
    };
    memset(a, 0, sizeof *a);
    opterr = 0;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, ":", options, NULL)) != -1) {
        switch (c) {
        case OPT_INPUT: a->input = optarg; break;
        case OPT_OUT: a->out = optarg; break;
        case OPT_VOCAB: a->vocab = optarg; break;
        case OPT_VOCAB_SIZE: /* the range is checked by train, with the reason */
            a->vocab_size = parse_number("vocab-size", optarg, LLONG_MIN, LLONG_MAX);
            a->have_vocab_size = 1;
            break;
        case OPT_MAX_CHUNKS:
            a->max_chunks = parse_number("max-chunks", optarg, 16, 1LL << 26);
            break;
        case OPT_MIN_COUNT:
            a->min_count = parse_number("min-count", optarg, 1, 1LL << 62);
            break;
        case OPT_BYTES: a->bytes = 1; break;
        case OPT_QUIET: a->quiet = 1; break;
        case OPT_LIST: a->list = 1; break;
        case OPT_HELP: a->help = 1; break;
        case ':': die("%s: option %s needs a value", command, argv[optind - 1]);
        default: die("%s: unknown option '%s' (try --help)", command, argv[optind - 1]);
        }
    }
    if (optind < argc) die("%s: unexpected argument '%s' (try --help)", command, argv[optind]);
}

static void require(const char *command, const char *value, const char *option) {
    if (!value) die("%s: --%s is required (try --help)", command, option);
}

/* Refuses, before any work, an --out that is a directory, missing its directory, or the same
 * file (also through a link) as --input or --vocab: writing it would destroy that input. */
static void check_out(const char *command, const Args *a) {
    const char *inputs[2] = {a->input, a->vocab};
    char err[OUT_FILE_PATH + 256];
    if (out_file_check(a->out, inputs, 2, err, sizeof err)) die("%s: %s", command, err);
}

/* An llm.c token file (the layout data/dataset.h reads: 256 int32 of header -- magic, version,
 * count -- then the uint16 tokens) written through out_file.h. */
static void write_token_file(const char *path, const uint16_t *tokens, size_t n) {
    enum { HEADER_INTS = 256 };
    if (n > (size_t)INT32_MAX) die("encode: %zu tokens, a token file holds at most %d", n, INT32_MAX);
    char err[OUT_FILE_PATH + 256];
    OutFile o;
    if (out_file_open(&o, path, err, sizeof err)) die("encode: %s", err);
    int32_t header[HEADER_INTS] = {0};
    header[0] = TOKEN_FILE_MAGIC;
    header[1] = TOKEN_FILE_VERSION;
    header[2] = (int32_t)n;
    if (fwrite(header, sizeof header[0], HEADER_INTS, o.f) != HEADER_INTS ||
        fwrite(tokens, sizeof tokens[0], n, o.f) != n) {
        int e = errno;
        out_file_abort(&o);
        die("encode: cannot write %s: %s", path, strerror(e));
    }
    if (out_file_commit(&o, err, sizeof err)) die("encode: %s", err);
}

/* The tokenizer named by --vocab, or the byte tokenizer for --bytes. */
static void open_tokenizer(const char *command, const Args *a, Tokenizer *tok) {
    char err[512];
    if (a->bytes && a->vocab) die("%s: give --vocab or --bytes, not both", command);
    if (!a->bytes && !a->vocab) die("%s: --vocab VOCAB (or --bytes) is required", command);
    if (a->bytes ? tokenizer_init_bytes(tok) : tokenizer_load(tok, a->vocab, err, sizeof err)) {
        if (a->bytes) die("out of memory");
        die("%s", err);
    }
}

static int cmd_train(const Args *a) {
    require("train", a->input, "input");
    require("train", a->out, "out");
    if (!a->have_vocab_size) die("train: --vocab-size is required (try --help)");
    check_out("train", a);
    /* an empty corpus would learn nothing and still replace --out (maybe a good vocabulary) */
    char err[512];
    int fd = open_regular_fd(a->input, "input", err, sizeof err);
    if (fd < 0) die("train: %s", err);
    struct stat st;
    int empty = fstat(fd, &st) == 0 && st.st_size == 0;
    close(fd);
    if (empty) die("train: %s is empty: there is nothing to learn from", a->input);
    if (a->vocab_size > TOKENIZER_MAX_VOCAB)
        die("train: vocabulary size %lld too large: token ids are uint16, at most %d",
            a->vocab_size, TOKENIZER_MAX_VOCAB);
    if (a->vocab_size < 256)
        die("train: vocabulary size %lld too small: the 256 bytes come first", a->vocab_size);
    BpeTrainOptions opt = {
        .vocab_size = (int)a->vocab_size,
        .max_unique_chunks = (size_t)a->max_chunks,
        .min_pair_count = (uint64_t)a->min_count,
        .verbose = !a->quiet,
    };
    Tokenizer tok;
    double t0 = now_seconds();
    if (tokenizer_train_file(&tok, a->input, &opt, err, sizeof err)) die("train: %s", err);
    double t1 = now_seconds();
    if (tokenizer_save(&tok, a->out, err, sizeof err)) die("train: %s", err);
    if (!a->quiet) {
        fprintf(stderr, "tokenize: %d tokens (%d merges) learnt in %.1f s, saved to %s\n",
                tok.vocab_size, tok.num_merges, t1 - t0, a->out);
        if (tok.vocab_size < a->vocab_size)
            fprintf(stderr, "tokenize: note: no pair is left that occurs at least %lld times, "
                    "so the vocabulary stops short of %lld\n",
                    a->min_count ? a->min_count : 2, a->vocab_size);
    }
    tokenizer_free(&tok);
    return 0;
}

static int cmd_encode(const Args *a) {
    require("encode", a->input, "input");
    require("encode", a->out, "out");
    check_out("encode", a);
    Tokenizer tok;
    open_tokenizer("encode", a, &tok);
    char err[512];
    uint16_t *tokens;
    size_t n;
    double t0 = now_seconds();
    if (tokenizer_encode_file(&tok, a->input, &tokens, &n, err, sizeof err)) die("encode: %s", err);
    double t1 = now_seconds();
    if (n == 0) die("encode: %s is empty: a token file holds at least one token", a->input);
    size_t bytes = tokenizer_decoded_length(&tok, tokens, n);
    write_token_file(a->out, tokens, n);
    if (!a->quiet)
        fprintf(stderr, "tokenize: %zu bytes -> %zu tokens (%.3f bytes/token) in %.2f s, "
                "%.1f MB/s, written to %s\n", bytes, n, (double)bytes / n, t1 - t0,
                bytes / 1e6 / (t1 - t0 > 1e-9 ? t1 - t0 : 1e-9), a->out);
    free(tokens);
    tokenizer_free(&tok);
    return 0;
}

static int cmd_decode(const Args *a) {
    require("decode", a->input, "input");
    require("decode", a->out, "out");
    check_out("decode", a);
    Tokenizer tok;
    open_tokenizer("decode", a, &tok);
    char err[512];
    Dataset ds;
    if (dataset_open(&ds, a->input, err, sizeof err)) die("decode: %s", err);
    if (ds.kind != DATASET_TOKENS16)
        die("decode: %s is not a token file (no llm.c token header)", a->input);
    if (ds.max_token >= tok.vocab_size)
        die("decode: %s holds token %d, outside the vocabulary of %d", a->input, ds.max_token,
            tok.vocab_size);
    OutFile o;
    if (out_file_open(&o, a->out, err, sizeof err)) die("decode: %s", err);
    enum { BLOCK = 1 << 16 };
    static uint8_t buf[BLOCK * PRETOK_MAX_CHUNK];
    for (size_t i = 0; i < ds.num_tokens; i += BLOCK) {
        size_t n = ds.num_tokens - i < BLOCK ? ds.num_tokens - i : BLOCK;
        long long len = tokenizer_decode(&tok, ds.tokens + i, n, buf, sizeof buf, NULL);
        if (len < 0 || fwrite(buf, 1, (size_t)len, o.f) != (size_t)len) {
            int e = len < 0 ? EINVAL : errno;
            out_file_abort(&o);
            die("decode: cannot write %s: %s", a->out, strerror(e));
        }
    }
    if (out_file_commit(&o, err, sizeof err)) die("decode: %s", err);
    dataset_close(&ds);
    tokenizer_free(&tok);
    return 0;
}

/* Prints bytes with C escapes for anything but printable ASCII. */
static void print_escaped(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c == '\\') fputs("\\\\", stdout);
        else if (c == '\n') fputs("\\n", stdout);
        else if (c == '\t') fputs("\\t", stdout);
        else if (c >= 0x20 && c < 0x7F) putchar(c);
        else printf("\\x%02x", c);
    }
}

static int cmd_info(const Args *a) {
    require("info", a->vocab, "vocab");
    Tokenizer tok;
    open_tokenizer("info", a, &tok);
    size_t longest = 0;
    int longest_id = 0;
    for (int id = 0; id < tok.vocab_size; id++) {
        size_t len;
        tokenizer_token_bytes(&tok, id, &len);
        if (len > longest) { longest = len; longest_id = id; }
    }
    printf("%s: %d tokens (%d merges), longest token %d is %zu bytes\n", a->vocab,
           tok.vocab_size, tok.num_merges, longest_id, longest);
    for (int id = 0; a->list && id < tok.vocab_size; id++) {
        size_t len;
        const uint8_t *b = tokenizer_token_bytes(&tok, id, &len);
        printf("%d\t", id);
        print_escaped(b, len);
        putchar('\n');
    }
    tokenizer_free(&tok);
    return 0;
}

int main(int argc, char **argv) {
    /* a reader of a FIFO --out that goes away gives EPIPE and one line, not a silent death */
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2) die("no command given: train, encode, decode or info (try --help)");
    const char *command = argv[1];
    if (!strcmp(command, "--help") || !strcmp(command, "-h") || !strcmp(command, "help")) {
        fputs(USAGE, stdout);
        return 0;
    }
    int (*run)(const Args *) = !strcmp(command, "train")    ? cmd_train
                               : !strcmp(command, "encode") ? cmd_encode
                               : !strcmp(command, "decode") ? cmd_decode
                               : !strcmp(command, "info")   ? cmd_info
                                                            : NULL;
    if (!run) die("unknown command '%s': train, encode, decode or info (try --help)", command);
    Args a;
    parse_args(command, argc - 1, argv + 1, &a);
    if (a.help) {
        fputs(USAGE, stdout);
        return 0;
    }
    return run(&a);
}
