/* test/test.h: the few helpers every test program shares.
 *
 * Each test program is a main() that calls CHECK* and ends with `return test_summary("name")`,
 * which prints `name: N passed, N failed` (plus `, N skipped` when test_skip counted any) and
 * returns non-zero on any failure. test/run.sh runs every program and prints the grand total as
 * its last line.
 */
#ifndef TEST_H
#define TEST_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_passed_count = 0, test_failed_count = 0, test_skipped_count = 0;

#define CHECK(cond, ...)                                                         \
    do {                                                                         \
        if (cond) {                                                              \
            test_passed_count++;                                                 \
        } else {                                                                 \
            test_failed_count++;                                                 \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                 \
            fprintf(stderr, __VA_ARGS__);                                        \
            fprintf(stderr, "\n");                                               \
        }                                                                        \
    } while (0)

/* Counts n checks that cannot run here (a tool or device this machine lacks) as skipped, with
 * one line saying why, e.g. test_skip(3, "need a GPU"). Skipped checks never fail a run. */
static inline void test_skip(int n, const char *why) {
    test_skipped_count += n;
    printf("skipped: %d checks %s\n", n, why);
}

static inline int test_summary(const char *name) {
    if (test_skipped_count)
        printf("%s: %d passed, %d failed, %d skipped\n", name, test_passed_count, test_failed_count,
               test_skipped_count);
    else
        printf("%s: %d passed, %d failed\n", name, test_passed_count, test_failed_count);
    return test_failed_count ? 1 : 0;
}

/* A small deterministic generator (xorshift64*), so tests do not depend on libc's rand(). */
static inline uint64_t test_rng_next(uint64_t *s) {
    *s ^= *s >> 12; *s ^= *s << 25; *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}
/* Uniform in [-1, 1). */
static inline float test_randf(uint64_t *s) {
    return (float)((test_rng_next(s) >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}
static inline void test_fill_random(float *x, size_t n, uint64_t *s, float amplitude) {
    for (size_t i = 0; i < n; i++) x[i] = amplitude * test_randf(s);
}
/* Fill with NaN so an output the code under test never writes is caught. */
static inline void test_poison(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = NAN;
}

/* Largest |a-b| / (|b| + floor) over n elements; NaN anywhere gives INFINITY. */
static inline double test_max_rel_err(const float *a, const float *b, size_t n, double floor_) {
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double x = a[i], y = b[i];
        if (isnan(x) || isnan(y)) return INFINITY;
        double e = fabs(x - y) / (fabs(y) + floor_);
        if (e > worst) worst = e;
    }
    return worst;
}
/* Largest |a-b| scaled by the largest |b|: an error relative to the tensor's magnitude. */
static inline double test_max_err_scaled(const float *a, const float *b, size_t n) {
    double worst = 0.0, mag = 1e-30;
    for (size_t i = 0; i < n; i++) {
        if (isnan(a[i]) || isnan(b[i])) return INFINITY;
        double e = fabs((double)a[i] - b[i]);
        if (e > worst) worst = e;
        if (fabs(b[i]) > mag) mag = fabs(b[i]);
    }
    return worst / mag;
}

#endif
