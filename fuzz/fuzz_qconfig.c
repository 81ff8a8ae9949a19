/* libFuzzer target: reading a quantization config from config.json text
 * (msbnb_qconfig_from_json) and writing it back. Whatever is accepted must validate and
 * survive a round trip through msbnb_qconfig_to_json unchanged. */
#include "msbnb/qconfig.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fuzz_assert(int ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "fuzz_qconfig: invariant violated: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    msbnb_qconfig c;
    /* The text is not NUL-terminated: the parser must honour `len`. */
    msbnb_status st = msbnb_qconfig_from_json(&c, (const char *)data, size);
    if (st != MSBNB_OK) return 0;
    if (msbnb_qconfig_validate(&c) != MSBNB_OK) return 0; /* parsed but unusable values */
    char buf[16384];
    size_t len = 0;
    st = msbnb_qconfig_to_json(&c, buf, sizeof buf, &len);
    fuzz_assert(st == MSBNB_OK || st == MSBNB_ERR_BUFFER_TOO_SMALL, "to_json status");
    if (st != MSBNB_OK) return 0;
    fuzz_assert(len == strlen(buf), "to_json length");
    msbnb_qconfig back;
    fuzz_assert(msbnb_qconfig_from_json(&back, buf, len) == MSBNB_OK, "own output parses");
    char buf2[16384];
    size_t len2 = 0;
    fuzz_assert(msbnb_qconfig_to_json(&back, buf2, sizeof buf2, &len2) == MSBNB_OK, "re-write");
    fuzz_assert(len2 == len && memcmp(buf, buf2, len) == 0, "round trip is stable");
    return 0;
}
