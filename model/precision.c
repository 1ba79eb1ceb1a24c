/* model/precision.c: names of the numeric precisions a backend can train in. */
#include <string.h>

#include "model/precision.h"

static const char *const PRECISION_NAMES[PRECISION_NUM] = {"fp32", "bf16", "fp16"};

const char *precision_name(Precision p) {
    return (p >= 0 && p < PRECISION_NUM) ? PRECISION_NAMES[p] : "?";
}

int precision_from_name(const char *name, Precision *out) {
    for (int i = 0; i < PRECISION_NUM; i++) {
        if (strcmp(name, PRECISION_NAMES[i]) == 0) {
            *out = (Precision)i;
            return 0;
        }
    }
    return -1;
}
