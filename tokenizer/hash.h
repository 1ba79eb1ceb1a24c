/* tokenizer/hash.h: the 64-bit hash of short byte strings that the chunk table and the
 * encoder's memo share. Words of 8 bytes are folded in with a multiply-xorshift mixer
 * (splitmix64's finaliser), the tail zero-padded and the length mixed in, so "a" and "a\0"
 * differ. Not cryptographic: only the tables' spread depends on it, never correctness. */
#ifndef TOKENIZER_HASH_H
#define TOKENIZER_HASH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint64_t tok_hash_mix(uint64_t h) {
    h ^= h >> 30; h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 27; h *= 0x94d049bb133111ebULL;
    h ^= h >> 31;
    return h;
}

static inline uint64_t tok_hash_bytes(const uint8_t *p, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ULL * (n + 1);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = tok_hash_mix(h ^ w);
        p += 8;
        n -= 8;
    }
    if (n) {
        uint64_t w = 0;
        memcpy(&w, p, n);
        h = tok_hash_mix(h ^ w ^ 0x5555555555555555ULL);
    }
    return tok_hash_mix(h);
}

#endif
