/* Internal helpers of src/io: paths, whole-file reads, atomic writes, a growable string
 * buffer, and Python-compatible number formatting (for byte-identical JSON). */
#ifndef MSBNB_IO_INTERNAL_H
#define MSBNB_IO_INTERNAL_H

#include "msbnb/safetensors.h"

#include <stddef.h>
#include <stdint.h>

/* Reads a whole (small) file into a NUL-terminated malloc'd buffer; files larger than
 * `limit` bytes are an MSBNB_ERR_FORMAT. */
msbnb_status msbnb__read_text_file(const char *path, size_t limit, char **out, size_t *len);
/* Writes `len` bytes to `path` atomically: temp file in the same directory, fsync,
 * rename, fsync of the directory. */
msbnb_status msbnb__write_file_atomic(const char *path, const void *data, size_t len);
/* fsyncs a directory (best effort is not enough for atomic renames: errors reported). */
msbnb_status msbnb__fsync_dir(const char *dir);
/* malloc'd "a/b"; NULL on OOM. */
char *msbnb__path_join(const char *a, const char *b);
/* malloc'd directory part of a path ("." if none). */
char *msbnb__dirname(const char *path);
/* Hint that tensor i is about to be read: maps its pages in one call where the kernel
 * can (no-op otherwise, and for memory images). */
void msbnb__st_populate(const msbnb_st_file_t *f, size_t i);
/* Whether a tensor name exists. */
int msbnb__st_has(const msbnb_st_file_t *f, const char *name);

/* Growable string; `err` latches an allocation failure. */
typedef struct {
    char *s;
    size_t len, cap;
    int err;
} msbnb__sbuf;
void msbnb__sb_put(msbnb__sbuf *b, const char *s, size_t n);
void msbnb__sb_puts(msbnb__sbuf *b, const char *s);
void msbnb__sb_printf(msbnb__sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* JSON string literal with serde_json's escaping (", \, control characters). */
void msbnb__sb_json_str(msbnb__sbuf *b, const char *s);
void msbnb__sb_free(msbnb__sbuf *b);

/* Python's repr() of a float ("0.05156029388308525", "6.0", "1e-05"): the shortest
 * digits that round-trip, Python's choice of notation. buf >= 32 bytes. */
void msbnb__py_float_repr(double x, char *buf, size_t cap);

#endif
