/* Helpers shared by the tests/test_io_*.c files: scratch folders, writing small
 * checkpoints, checking that no partial output was left behind. Header-only (the test
 * glob links testutil.c alone). */
#ifndef MSBNB_IO_TESTUTIL_H
#define MSBNB_IO_TESTUTIL_H

#include "testutil.h"

#include <dirent.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int io_rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

/* rm -rf */
static inline void io_rm_rf(const char *path) { nftw(path, io_rm_cb, 16, FTW_DEPTH | FTW_PHYS); }

/* A fresh scratch folder (static buffer per call site: copy it). */
static inline char *io_mkdtemp(void) {
    const char *base = getenv("TMPDIR");
    char *p = malloc(512);
    snprintf(p, 512, "%s/msbnb-io-test-XXXXXX", base && base[0] ? base : "/tmp");
    if (!mkdtemp(p)) {
        free(p);
        return NULL;
    }
    return p;
}

static inline char *io_join(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    snprintf(p, n, "%s/%s", a, b);
    return p;
}

static inline int io_exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0;
}

/* Number of entries of dir (without . and ..); -1 if it cannot be read. */
static inline int io_count_entries(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

/* Whether any name under dir contains "tmp" (a leftover temporary file or folder). */
static inline int io_has_tmp_leftover(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int found = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strstr(e->d_name, "tmp")) found = 1;
    closedir(d);
    return found;
}

static inline int io_write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    int ok = fwrite(data, 1, n, f) == n;
    return fclose(f) == 0 && ok;
}

static inline void *io_read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long l = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *p = malloc(l > 0 ? (size_t)l : 1);
    *n = fread(p, 1, (size_t)l, f);
    fclose(f);
    return p;
}

/* A safetensors image from a header text and `data_len` bytes of data (filled with i&255):
 * [8-byte LE length][header][data]. malloc'd; *len gets its size. */
static inline uint8_t *io_image(const char *header, size_t data_len, size_t *len) {
    size_t hl = strlen(header);
    *len = 8 + hl + data_len;
    uint8_t *b = malloc(*len);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, header, hl);
    for (size_t i = 0; i < data_len; i++) b[8 + hl + i] = (uint8_t)i;
    return b;
}

/* One tensor for io_write_st. */
typedef struct {
    const char *name;
    msbnb_dtype dtype;
    int ndim;
    int64_t shape[4];
    const void *data;
} io_tensor;

static inline msbnb_status io_write_st(const char *path, const io_tensor *t, int n) {
    msbnb_st_writer_t *w = NULL;
    msbnb_status st = msbnb_st_writer_create(&w, path);
    if (st == MSBNB_OK) st = msbnb_st_writer_set_metadata(w, "format", "pt");
    for (int i = 0; i < n && st == MSBNB_OK; i++)
        st = msbnb_st_writer_add(w, t[i].name, t[i].dtype, t[i].shape, t[i].ndim);
    if (st == MSBNB_OK) st = msbnb_st_writer_begin(w);
    for (int i = 0; i < n && st == MSBNB_OK; i++) {
        int64_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++) numel *= t[i].shape[d];
        st = msbnb_st_writer_write(w, t[i].name, 0, t[i].data, (uint64_t)numel * msbnb_dtype_size(t[i].dtype));
    }
    if (st == MSBNB_OK) st = msbnb_st_writer_finish(w);
    msbnb_st_writer_free(w);
    return st;
}

#endif
