/* File-system helpers for src/io: whole-file reads, atomic writes (temp + fsync +
 * rename), string buffers, and Python float repr. */
#include "internal.h"
#include "io_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *msbnb__path_join(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    char *p = malloc(la + lb + 2);
    if (!p) return NULL;
    memcpy(p, a, la);
    size_t k = la;
    if (la && a[la - 1] != '/') p[k++] = '/';
    memcpy(p + k, b, lb + 1);
    return p;
}

char *msbnb__dirname(const char *path) {
    const char *sl = strrchr(path, '/');
    if (!sl) return strdup(".");
    if (sl == path) return strdup("/");
    size_t n = (size_t)(sl - path);
    char *d = malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, path, n);
    d[n] = 0;
    return d;
}

msbnb_status msbnb__read_text_file(const char *path, size_t limit, char **out, size_t *len) {
    *out = NULL;
    *len = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp) return msbnb__fail(MSBNB_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 65536 + 1 > cap) {
            cap = cap ? cap * 2 : 65536 * 2;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(fp);
                return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
            }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, 65536, fp);
        n += r;
        if (n > limit) {
            free(buf);
            fclose(fp);
            return msbnb__fail(MSBNB_ERR_FORMAT, "%s: larger than %zu bytes", path, limit);
        }
        if (r < 65536) break;
    }
    int bad = ferror(fp);
    fclose(fp);
    if (bad) {
        free(buf);
        return msbnb__fail(MSBNB_ERR_IO, "%s: read error", path);
    }
    buf[n] = 0;
    *out = buf;
    *len = n;
    return MSBNB_OK;
}

msbnb_status msbnb__fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return msbnb__fail(MSBNB_ERR_IO, "%s: cannot open directory: %s", dir, strerror(errno));
    int r = fsync(fd);
    int e = errno;
    close(fd);
    if (r != 0 && e != EINVAL && e != EROFS)
        return msbnb__fail(MSBNB_ERR_IO, "%s: fsync failed: %s", dir, strerror(e));
    return MSBNB_OK;
}

msbnb_status msbnb__write_file_atomic(const char *path, const void *data, size_t len) {
    size_t pl = strlen(path);
    char *tmp = malloc(pl + 16);
    if (!tmp) return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
    snprintf(tmp, pl + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        msbnb_status st = msbnb__fail(MSBNB_ERR_IO, "%s: cannot create temporary file: %s", path,
                                      strerror(errno));
        free(tmp);
        return st;
    }
    const char *p = data;
    size_t left = len;
    msbnb_status st = MSBNB_OK;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            st = msbnb__fail(MSBNB_ERR_IO, "%s: write failed: %s", tmp, strerror(errno));
            break;
        }
        p += w;
        left -= (size_t)w;
    }
    if (st == MSBNB_OK && fchmod(fd, 0644) != 0) { /* mkstemp makes 0600 */ }
    if (st == MSBNB_OK && fsync(fd) != 0)
        st = msbnb__fail(MSBNB_ERR_IO, "%s: fsync failed: %s", tmp, strerror(errno));
    if (close(fd) != 0 && st == MSBNB_OK)
        st = msbnb__fail(MSBNB_ERR_IO, "%s: close failed: %s", tmp, strerror(errno));
    if (st == MSBNB_OK && rename(tmp, path) != 0)
        st = msbnb__fail(MSBNB_ERR_IO, "%s: rename failed: %s", path, strerror(errno));
    if (st != MSBNB_OK) unlink(tmp);
    free(tmp);
    if (st == MSBNB_OK) {
        char *d = msbnb__dirname(path);
        if (d) st = msbnb__fsync_dir(d);
        free(d);
    }
    return st;
}

void msbnb__sb_put(msbnb__sbuf *b, const char *s, size_t n) {
    if (b->err) return;
    if (b->len + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->len + n + 1) nc *= 2;
        char *ns = realloc(b->s, nc);
        if (!ns) {
            b->err = 1;
            return;
        }
        b->s = ns;
        b->cap = nc;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}

void msbnb__sb_puts(msbnb__sbuf *b, const char *s) { msbnb__sb_put(b, s, strlen(s)); }

void msbnb__sb_printf(msbnb__sbuf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->err = 1;
        return;
    }
    if ((size_t)n < sizeof tmp) {
        msbnb__sb_put(b, tmp, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        b->err = 1;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    msbnb__sb_put(b, big, (size_t)n);
    free(big);
}

void msbnb__sb_json_str(msbnb__sbuf *b, const char *s) {
    msbnb__sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        switch (*p) {
        case '"': msbnb__sb_put(b, "\\\"", 2); break;
        case '\\': msbnb__sb_put(b, "\\\\", 2); break;
        case '\n': msbnb__sb_put(b, "\\n", 2); break;
        case '\r': msbnb__sb_put(b, "\\r", 2); break;
        case '\t': msbnb__sb_put(b, "\\t", 2); break;
        case '\b': msbnb__sb_put(b, "\\b", 2); break;
        case '\f': msbnb__sb_put(b, "\\f", 2); break;
        default:
            if (*p < 0x20) {
                snprintf(esc, sizeof esc, "\\u%04x", *p);
                msbnb__sb_puts(b, esc);
            } else {
                msbnb__sb_put(b, (const char *)p, 1);
            }
        }
    }
    msbnb__sb_put(b, "\"", 1);
}

void msbnb__sb_free(msbnb__sbuf *b) {
    free(b->s);
    b->s = NULL;
    b->len = b->cap = 0;
}

void msbnb__py_float_repr(double x, char *buf, size_t cap) {
    if (isnan(x)) { snprintf(buf, cap, "NaN"); return; }
    if (isinf(x)) { snprintf(buf, cap, x > 0 ? "Infinity" : "-Infinity"); return; }
    if (x == 0.0) { snprintf(buf, cap, signbit(x) ? "-0.0" : "0.0"); return; }
    /* Shortest round-tripping digits (repr since Python 3.1). */
    char e[40];
    int prec = 1;
    for (; prec <= 17; prec++) {
        snprintf(e, sizeof e, "%.*e", prec - 1, x);
        if (strtod(e, NULL) == x) break;
    }
    /* e = [-]d[.ddd]e[+-]XX: split into sign, digits, exponent. */
    const char *p = e;
    int neg = 0;
    if (*p == '-') { neg = 1; p++; }
    char digits[24];
    int nd = 0;
    for (; *p && *p != 'e'; p++)
        if (*p != '.') digits[nd++] = *p;
    digits[nd] = 0;
    int exp10 = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0') digits[--nd] = 0;
    int decpt = exp10 + 1; /* value = 0.digits * 10^decpt */
    char out[64];
    size_t k = 0;
    if (neg) out[k++] = '-';
    if (decpt <= -4 || decpt > 16) {
        out[k++] = digits[0];
        if (nd > 1) {
            out[k++] = '.';
            for (int i = 1; i < nd; i++) out[k++] = digits[i];
        }
        snprintf(out + k, sizeof out - k, "e%c%02d", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
    } else if (decpt <= 0) {
        out[k++] = '0';
        out[k++] = '.';
        for (int i = 0; i < -decpt; i++) out[k++] = '0';
        for (int i = 0; i < nd; i++) out[k++] = digits[i];
        out[k] = 0;
    } else {
        for (int i = 0; i < decpt; i++) out[k++] = i < nd ? digits[i] : '0';
        out[k++] = '.';
        if (nd > decpt)
            for (int i = decpt; i < nd; i++) out[k++] = digits[i];
        else
            out[k++] = '0';
        out[k] = 0;
    }
    snprintf(buf, cap, "%s", out);
}
