/* safetensors writer: declare tensors, write the header, stream data with pwrite (any
 * order, any thread), then fsync + rename. Layout as safetensors' serialize(): data sorted
 * by dtype (descending in the reference's Dtype enum order) then by name; header keys in
 * data order after "__metadata__"; header padded with spaces to a multiple of 8. */
#include "msbnb/safetensors.h"

#include "internal.h"
#include "io_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    char *name;
    msbnb_dtype dtype;
    int ndim;
    int64_t shape[MSBNB_ST_MAX_DIMS];
    uint64_t nbytes, begin, written;
} wtensor;

enum { W_DECLARE = 0, W_BEGUN = 1, W_DONE = 2 };

struct msbnb_st_writer {
    char *path, *tmp;
    int fd, state;
    wtensor *t;
    size_t n, cap;
    size_t *by_name;
    char **mk, **mv;
    size_t nmeta;
    uint64_t data_start, file_size;
    uint64_t unflushed; /* bytes written since writeback was last started */
    pthread_mutex_t mu;
};

/* Position of each dtype in safetensors' Dtype enum (BOOL, U8, I8, F8*, I16, U16, F16,
 * BF16, I32, U32, F32, F64, I64, U64): the writer sorts by it, descending. */
static int dtype_rank(msbnb_dtype d) {
    switch (d) {
    case MSBNB_DTYPE_BOOL: return 0;
    case MSBNB_DTYPE_U8: return 1;
    case MSBNB_DTYPE_I8: return 2;
    case MSBNB_DTYPE_I16: return 5;
    case MSBNB_DTYPE_F16: return 7;
    case MSBNB_DTYPE_BF16: return 8;
    case MSBNB_DTYPE_I32: return 9;
    case MSBNB_DTYPE_F32: return 11;
    case MSBNB_DTYPE_F64: return 12;
    case MSBNB_DTYPE_I64: return 13;
    default: return -1;
    }
}

msbnb_status msbnb_st_writer_create(msbnb_st_writer_t **out, const char *path) {
    MSBNB_CHECK_NULL(out);
    MSBNB_CHECK_NULL(path);
    *out = NULL;
    if (!path[0]) return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: empty path", __func__);
    msbnb_st_writer_t *w = calloc(1, sizeof *w);
    if (!w) return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
    w->path = strdup(path);
    w->fd = -1;
    if (!w->path) {
        free(w);
        return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
    }
    pthread_mutex_init(&w->mu, NULL);
    *out = w;
    return MSBNB_OK;
}

static msbnb_status check_declaring(const msbnb_st_writer_t *w, const char *fn) {
    if (w->state != W_DECLARE)
        return msbnb__fail(MSBNB_ERR_STATE, "%s: %s: header already written", fn, w->path);
    return MSBNB_OK;
}

msbnb_status msbnb_st_writer_set_metadata(msbnb_st_writer_t *w, const char *key,
                                          const char *value) {
    MSBNB_CHECK_NULL(w);
    MSBNB_CHECK_NULL(key);
    MSBNB_CHECK_NULL(value);
    MSBNB_TRY(check_declaring(w, __func__));
    for (size_t i = 0; i < w->nmeta; i++)
        if (strcmp(w->mk[i], key) == 0)
            return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: duplicate metadata key '%s'",
                               __func__, key);
    char **nk = realloc(w->mk, (w->nmeta + 1) * sizeof *nk);
    if (!nk) return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
    w->mk = nk;
    char **nv = realloc(w->mv, (w->nmeta + 1) * sizeof *nv);
    if (!nv) return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
    w->mv = nv;
    char *k = strdup(key), *v = strdup(value);
    if (!k || !v) {
        free(k);
        free(v);
        return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
    }
    w->mk[w->nmeta] = k;
    w->mv[w->nmeta] = v;
    w->nmeta++;
    return MSBNB_OK;
}

msbnb_status msbnb_st_writer_add(msbnb_st_writer_t *w, const char *name, msbnb_dtype dtype,
                                 const int64_t *shape, int ndim) {
    MSBNB_CHECK_NULL(w);
    MSBNB_CHECK_NULL(name);
    MSBNB_TRY(check_declaring(w, __func__));
    if (!name[0] || strcmp(name, "__metadata__") == 0)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: invalid tensor name '%s'", __func__, name);
    if (dtype_rank(dtype) < 0)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: tensor '%s': invalid dtype %d",
                           __func__, name, (int)dtype);
    if (ndim < 0 || ndim > MSBNB_ST_MAX_DIMS || (ndim > 0 && !shape))
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: tensor '%s': bad ndim %d", __func__,
                           name, ndim);
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: tensor '%s': negative dim",
                               __func__, name);
        if (!msbnb__mul_ok(numel, shape[i], &numel))
            return msbnb__fail(MSBNB_ERR_OVERFLOW, "%s: tensor '%s': size overflows", __func__, name);
    }
    int64_t nb;
    if (!msbnb__mul_ok(numel, (int64_t)msbnb_dtype_size(dtype), &nb))
        return msbnb__fail(MSBNB_ERR_OVERFLOW, "%s: tensor '%s': size overflows", __func__, name);
    if (w->n == w->cap) {
        size_t nc = w->cap ? w->cap * 2 : 64;
        wtensor *nt = realloc(w->t, nc * sizeof *nt);
        if (!nt) return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
        w->t = nt;
        w->cap = nc;
    }
    wtensor *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    if (!t->name) return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->nbytes = (uint64_t)nb;
    w->n++;
    return MSBNB_OK;
}

static int cmp_layout(const void *a, const void *b) {
    const wtensor *x = a, *y = b;
    int rx = dtype_rank(x->dtype), ry = dtype_rank(y->dtype);
    if (rx != ry) return rx > ry ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int cmp_idx(const void *a, const void *b, void *ctx) {
    const wtensor *t = ctx;
    return strcmp(t[*(const size_t *)a].name, t[*(const size_t *)b].name);
}

static msbnb_status pwrite_all(int fd, const void *data, uint64_t n, uint64_t off, const char *what) {
    const char *p = data;
    while (n > 0) {
        size_t chunk = n > (1u << 30) ? (1u << 30) : (size_t)n;
        ssize_t r = pwrite(fd, p, chunk, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return msbnb__fail(MSBNB_ERR_IO, "%s: write failed: %s", what,
                                       r < 0 ? strerror(errno) : "no progress");
        p += r;
        n -= (uint64_t)r;
        off += (uint64_t)r;
    }
    return MSBNB_OK;
}

msbnb_status msbnb_st_writer_begin(msbnb_st_writer_t *w) {
    MSBNB_CHECK_NULL(w);
    MSBNB_TRY(check_declaring(w, __func__));
    w->state = W_DONE; /* any failure below leaves the writer unusable */
    if (w->n) qsort(w->t, w->n, sizeof *w->t, cmp_layout);
    w->by_name = malloc((w->n ? w->n : 1) * sizeof(size_t));
    if (!w->by_name) return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
    for (size_t i = 0; i < w->n; i++) w->by_name[i] = i;
    if (w->n) qsort_r(w->by_name, w->n, sizeof(size_t), cmp_idx, w->t);
    for (size_t i = 1; i < w->n; i++) /* duplicates are adjacent once sorted by name */
        if (strcmp(w->t[w->by_name[i - 1]].name, w->t[w->by_name[i]].name) == 0)
            return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: %s: duplicate tensor name '%s'",
                               __func__, w->path, w->t[w->by_name[i]].name);
    uint64_t off = 0;
    for (size_t i = 0; i < w->n; i++) {
        w->t[i].begin = off;
        off += w->t[i].nbytes;
    }
    msbnb__sbuf h = {0};
    msbnb__sb_puts(&h, "{");
    int first = 1;
    if (w->nmeta) {
        msbnb__sb_puts(&h, "\"__metadata__\":{");
        for (size_t i = 0; i < w->nmeta; i++) {
            if (i) msbnb__sb_puts(&h, ",");
            msbnb__sb_json_str(&h, w->mk[i]);
            msbnb__sb_puts(&h, ":");
            msbnb__sb_json_str(&h, w->mv[i]);
        }
        msbnb__sb_puts(&h, "}");
        first = 0;
    }
    for (size_t i = 0; i < w->n; i++) {
        const wtensor *t = &w->t[i];
        if (!first) msbnb__sb_puts(&h, ",");
        first = 0;
        msbnb__sb_json_str(&h, t->name);
        msbnb__sb_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", msbnb_dtype_name(t->dtype));
        for (int d = 0; d < t->ndim; d++) msbnb__sb_printf(&h, d ? ",%lld" : "%lld", (long long)t->shape[d]);
        msbnb__sb_printf(&h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)t->begin,
                         (unsigned long long)(t->begin + t->nbytes));
    }
    msbnb__sb_puts(&h, "}");
    while (!h.err && h.len % 8) msbnb__sb_puts(&h, " ");
    if (h.err) {
        msbnb__sb_free(&h);
        return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
    }
    if (h.len > MSBNB_ST_MAX_HEADER) {
        msbnb__sb_free(&h);
        return msbnb__fail(MSBNB_ERR_OVERFLOW, "%s: header of %zu bytes exceeds the format's limit",
                           w->path, (size_t)h.len);
    }
    size_t pl = strlen(w->path);
    w->tmp = malloc(pl + 16);
    if (!w->tmp) {
        msbnb__sb_free(&h);
        return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
    }
    snprintf(w->tmp, pl + 16, "%s.tmp.XXXXXX", w->path);
    w->fd = mkstemp(w->tmp);
    if (w->fd < 0) {
        msbnb__sb_free(&h);
        msbnb_status st = msbnb__fail(MSBNB_ERR_IO, "%s: cannot create temporary file: %s",
                                      w->path, strerror(errno));
        free(w->tmp);
        w->tmp = NULL;
        return st;
    }
    if (fchmod(w->fd, 0644) != 0) { /* keep mkstemp's 0600 if chmod is refused */ }
    uint8_t len8[8];
    uint64_t hl = h.len;
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)(hl >> (8 * i));
    msbnb_status st = pwrite_all(w->fd, len8, 8, 0, w->tmp);
    if (st == MSBNB_OK) st = pwrite_all(w->fd, h.s, h.len, 8, w->tmp);
    msbnb__sb_free(&h);
    w->data_start = 8 + hl;
    w->file_size = w->data_start + off;
    if (st == MSBNB_OK && ftruncate(w->fd, (off_t)w->file_size) != 0)
        st = msbnb__fail(MSBNB_ERR_IO, "%s: cannot size file: %s", w->tmp, strerror(errno));
    if (st != MSBNB_OK) return st;
    w->state = W_BEGUN;
    return MSBNB_OK;
}

msbnb_status msbnb_st_writer_write(msbnb_st_writer_t *w, const char *name, uint64_t offset,
                                   const void *data, uint64_t nbytes) {
    MSBNB_CHECK_NULL(w);
    MSBNB_CHECK_NULL(name);
    if (nbytes && !data) MSBNB_CHECK_NULL(data);
    if (w->state != W_BEGUN)
        return msbnb__fail(MSBNB_ERR_STATE, "%s: %s: writer not begun or already finished",
                           __func__, w->path);
    size_t lo = 0, hi = w->n;
    wtensor *t = NULL;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(w->t[w->by_name[mid]].name, name);
        if (c == 0) { t = &w->t[w->by_name[mid]]; break; }
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    if (!t) return msbnb__fail(MSBNB_ERR_NOT_FOUND, "%s: tensor '%s' was not declared", __func__, name);
    if (offset > t->nbytes || nbytes > t->nbytes - offset)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT,
                           "%s: tensor '%s': bytes [%llu, %llu) outside its %llu bytes", __func__,
                           name, (unsigned long long)offset,
                           (unsigned long long)(offset + nbytes), (unsigned long long)t->nbytes);
    MSBNB_TRY(pwrite_all(w->fd, data, nbytes, w->data_start + t->begin + offset, w->tmp));
    pthread_mutex_lock(&w->mu);
    t->written += nbytes;
    w->unflushed += nbytes;
    int kick = w->unflushed >= ((uint64_t)64 << 20);
    if (kick) w->unflushed = 0;
    pthread_mutex_unlock(&w->mu);
    /* Start writeback of what is dirty so far without waiting for it (Linux
     * sync_file_range): the disk works while we compute, and the final fsync has less
     * left to do. Durability still comes from that fsync; a failure here is harmless. */
    if (kick) (void)sync_file_range(w->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
    return MSBNB_OK;
}

msbnb_status msbnb_st_writer_finish(msbnb_st_writer_t *w) {
    MSBNB_CHECK_NULL(w);
    if (w->state != W_BEGUN)
        return msbnb__fail(MSBNB_ERR_STATE, "%s: %s: writer not begun or already finished",
                           __func__, w->path);
    w->state = W_DONE;
    for (size_t i = 0; i < w->n; i++)
        if (w->t[i].written != w->t[i].nbytes)
            return msbnb__fail(MSBNB_ERR_STATE, "%s: tensor '%s' got %llu of its %llu bytes",
                               w->path, w->t[i].name, (unsigned long long)w->t[i].written,
                               (unsigned long long)w->t[i].nbytes);
    if (fsync(w->fd) != 0)
        return msbnb__fail(MSBNB_ERR_IO, "%s: fsync failed: %s", w->tmp, strerror(errno));
    int r = close(w->fd);
    w->fd = -1;
    if (r != 0) return msbnb__fail(MSBNB_ERR_IO, "%s: close failed: %s", w->tmp, strerror(errno));
    if (rename(w->tmp, w->path) != 0)
        return msbnb__fail(MSBNB_ERR_IO, "%s: rename failed: %s", w->path, strerror(errno));
    free(w->tmp);
    w->tmp = NULL; /* renamed: nothing to clean up */
    char *d = msbnb__dirname(w->path);
    msbnb_status st = d ? msbnb__fsync_dir(d) : msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
    free(d);
    return st;
}

void msbnb_st_writer_free(msbnb_st_writer_t *w) {
    if (!w) return;
    if (w->fd >= 0) close(w->fd);
    if (w->tmp) {
        unlink(w->tmp);
        free(w->tmp);
    }
    for (size_t i = 0; i < w->n; i++) free(w->t[i].name);
    for (size_t i = 0; i < w->nmeta; i++) {
        free(w->mk[i]);
        free(w->mv[i]);
    }
    free(w->mk);
    free(w->mv);
    free(w->t);
    free(w->by_name);
    free(w->path);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

uint64_t msbnb_st_writer_file_size(const msbnb_st_writer_t *w) {
    return w && w->state != W_DECLARE ? w->file_size : 0;
}
