/* Thread-local error messages (sqlite's errmsg model): set by msbnb__fail, read by
 * msbnb_last_error, overwritten by the next failure on the same thread. */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char g_msg[512];

msbnb_status msbnb__fail(msbnb_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_msg, sizeof g_msg, fmt, ap);
    va_end(ap);
    return s;
}

const char *msbnb_last_error(void) { return g_msg; }

void msbnb_clear_error(void) { g_msg[0] = '\0'; }

const char *msbnb_status_str(msbnb_status s) {
    switch (s) {
    case MSBNB_OK: return "MSBNB_OK";
    case MSBNB_ERR_INVALID_ARGUMENT: return "MSBNB_ERR_INVALID_ARGUMENT";
    case MSBNB_ERR_OUT_OF_MEMORY: return "MSBNB_ERR_OUT_OF_MEMORY";
    case MSBNB_ERR_OVERFLOW: return "MSBNB_ERR_OVERFLOW";
    case MSBNB_ERR_UNSUPPORTED: return "MSBNB_ERR_UNSUPPORTED";
    case MSBNB_ERR_BUFFER_TOO_SMALL: return "MSBNB_ERR_BUFFER_TOO_SMALL";
    case MSBNB_ERR_NON_FINITE: return "MSBNB_ERR_NON_FINITE";
    case MSBNB_ERR_IO: return "MSBNB_ERR_IO";
    case MSBNB_ERR_FORMAT: return "MSBNB_ERR_FORMAT";
    case MSBNB_ERR_SHAPE: return "MSBNB_ERR_SHAPE";
    case MSBNB_ERR_STATE: return "MSBNB_ERR_STATE";
    case MSBNB_ERR_CUDA: return "MSBNB_ERR_CUDA";
    case MSBNB_ERR_NOT_FOUND: return "MSBNB_ERR_NOT_FOUND";
    case MSBNB_ERR_INTERNAL: return "MSBNB_ERR_INTERNAL";
    }
    return "MSBNB_ERR_UNKNOWN";
}

const char *msbnb_version(void) { return MSBNB_VERSION_STRING; }

msbnb_status msbnb__mul_checked(int64_t a, int64_t b, int64_t *out, const char *what) {
    if (a < 0 || b < 0 || !msbnb__mul_ok(a, b, out))
        return msbnb__fail(MSBNB_ERR_OVERFLOW, "%s: %lld x %lld overflows", what, (long long)a,
                           (long long)b);
    return MSBNB_OK;
}
