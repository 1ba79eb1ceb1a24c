/* test/test_loss_scale.c: the loss scaler's decisions (train/loss_scale.h) on given norms: when a
 * step is skipped, how the scale halves, doubles and saturates, the skip count, and the parsing
 * of --loss-scale. The training runs that use it are in test/test_cli.sh (CPU) and
 * test/gpu/test_train_gpu.sh. */
#include "train/loss_scale.h"
#include "test/test.h"

static void test_off(void) {
    LossScaler ls;
    loss_scale_init(&ls, LOSS_SCALE_OFF, 1024.0f, 2);
    CHECK(ls.scale == 1.0f, "off: S = 1 whatever is given (%g)", ls.scale);
    CHECK(loss_scale_after_backward(&ls, INFINITY) == 0 && loss_scale_after_backward(&ls, NAN) == 0,
          "off: never skips, not even a non-finite norm (the step is as without scaling)");
    CHECK(ls.skipped == 0 && ls.scale == 1.0f && !loss_scale_exhausted(&ls), "off: nothing counted");
}

static void test_fixed(void) {
    LossScaler ls;
    loss_scale_init(&ls, LOSS_SCALE_FIXED, 1e38f, 2);
    CHECK(ls.scale == 1e38f, "fixed: S as given");
    CHECK(loss_scale_after_backward(&ls, INFINITY) == 1 && ls.last_skipped, "fixed: inf skips");
    CHECK(loss_scale_after_backward(&ls, NAN) == 1, "fixed: NaN skips");
    CHECK(ls.scale == 1e38f && ls.skipped == 2, "fixed: S unchanged by overflows, 2 skipped (%g, %llu)", ls.scale,
          (unsigned long long)ls.skipped);
    for (int i = 0; i < 5; i++) CHECK(loss_scale_after_backward(&ls, 3.0f) == 0, "fixed: finite norm runs");
    CHECK(ls.scale == 1e38f && !ls.last_skipped, "fixed: S unchanged by clean steps");
    CHECK(!loss_scale_exhausted(&ls), "fixed: never exhausted");
}

static void test_dynamic(void) {
    LossScaler ls;
    loss_scale_init(&ls, LOSS_SCALE_DYNAMIC, 65536.0f, 3);
    /* overflow: skip, halve, the clean count restarts */
    CHECK(loss_scale_after_backward(&ls, 1.0f) == 0 && ls.clean == 1, "dynamic: clean step counted");
    CHECK(loss_scale_after_backward(&ls, INFINITY) == 1, "dynamic: overflow skips");
    CHECK(ls.scale == 32768.0f && ls.clean == 0 && ls.skipped == 1 && ls.last_scale == 65536.0f,
          "dynamic: overflow halves S (%g), restarts the count (%d), reports the step's S (%g)", ls.scale, ls.clean,
          ls.last_scale);
    /* window clean steps: double, once */
    CHECK(loss_scale_after_backward(&ls, 2.0f) == 0 && loss_scale_after_backward(&ls, 2.0f) == 0, "dynamic: clean");
    CHECK(ls.scale == 32768.0f, "dynamic: S unchanged before the window ends");
    CHECK(loss_scale_after_backward(&ls, 2.0f) == 0 && ls.scale == 65536.0f && ls.clean == 0,
          "dynamic: the window's last clean step doubles S (%g)", ls.scale);
    CHECK(ls.last_scale == 32768.0f, "dynamic: that step ran at the old S");
    for (int i = 0; i < 6; i++) loss_scale_after_backward(&ls, 2.0f);
    CHECK(ls.scale == 262144.0f, "dynamic: two more windows, two more doublings (%g)", ls.scale);
    /* NaN counts as overflow too; consecutive overflows keep halving */
    loss_scale_after_backward(&ls, NAN);
    loss_scale_after_backward(&ls, INFINITY);
    CHECK(ls.scale == 65536.0f && ls.skipped == 3, "dynamic: NaN and inf halve twice (%g)", ls.scale);
    /* the ceiling: S never doubles past 2^127 */
    loss_scale_init(&ls, LOSS_SCALE_DYNAMIC, LOSS_SCALE_MAX, 1);
    loss_scale_after_backward(&ls, 1.0f);
    CHECK(ls.scale == LOSS_SCALE_MAX && isfinite(ls.scale), "dynamic: S stays at 2^127 (%g)", ls.scale);
    /* the floor, and exhaustion: the step at the floor overflowed too */
    loss_scale_init(&ls, LOSS_SCALE_DYNAMIC, 4.0f * LOSS_SCALE_MIN, 2000);
    loss_scale_after_backward(&ls, INFINITY);
    loss_scale_after_backward(&ls, INFINITY);
    CHECK(ls.scale == LOSS_SCALE_MIN && !loss_scale_exhausted(&ls), "dynamic: at the floor, not yet tried there");
    loss_scale_after_backward(&ls, INFINITY);
    CHECK(ls.scale == LOSS_SCALE_MIN && loss_scale_exhausted(&ls), "dynamic: overflow at the floor: exhausted");
    loss_scale_after_backward(&ls, 1.0f);
    CHECK(!loss_scale_exhausted(&ls), "dynamic: a clean step at the floor is fine");
    /* a window of 1 doubles after every clean step; huge initial scale recovers by halving */
    loss_scale_init(&ls, LOSS_SCALE_DYNAMIC, 1e30f, 1);
    int skips = 0;
    while (loss_scale_after_backward(&ls, ls.scale * 1e-20f > 1e3f ? INFINITY : 1.0f)) skips++;
    CHECK(skips > 0 && ls.scale <= 2e23f * 2.0f && ls.skipped == (uint64_t)skips,
          "dynamic: recovers from a huge S by halving (%d skips, S %g)", skips, ls.scale);
}

static void test_parse(void) {
    char err[256];
    LossScaleMode m;
    float s;
    CHECK(loss_scale_parse("dynamic", &m, &s, err, sizeof err) == 0 && m == LOSS_SCALE_DYNAMIC &&
              s == LOSS_SCALE_DEFAULT_INIT, "parse: dynamic starts at 2^16");
    CHECK(loss_scale_parse("1024", &m, &s, err, sizeof err) == 0 && m == LOSS_SCALE_FIXED && s == 1024.0f,
          "parse: a number is a fixed scale");
    CHECK(loss_scale_parse("1e38", &m, &s, err, sizeof err) == 0 && s == 1e38f, "parse: 1e38");
    CHECK(loss_scale_parse("0.5", &m, &s, err, sizeof err) == 0 && s == 0.5f, "parse: below 1 is allowed");
    const char *bad[] = {"", "0", "-2", "nan", "inf", "1e39", "12x", "dyn", "Dynamic"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        CHECK(loss_scale_parse(bad[i], &m, &s, err, sizeof err) == -1 && strstr(err, "--loss-scale") &&
                  !strchr(err, '\n'), "parse: '%s' refused in one line (%s)", bad[i], err);
    }
    CHECK(strcmp(loss_scale_mode_name(LOSS_SCALE_DYNAMIC), "dynamic") == 0 &&
              strcmp(loss_scale_mode_name(LOSS_SCALE_FIXED), "fixed") == 0 &&
              strcmp(loss_scale_mode_name(LOSS_SCALE_OFF), "off") == 0, "mode names");
}

int main(void) {
    test_off();
    test_fixed();
    test_dynamic();
    test_parse();
    return test_summary("test_loss_scale");
}
