/* safetensors reader: mmap, strict header validation, sharded checkpoints.
 * Format: https://github.com/huggingface/safetensors (8-byte LE header length, JSON header,
 * data region; offsets relative to the data region, contiguous and complete). */
#include "msbnb/safetensors.h"

#include "internal.h"
#include "io_internal.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    char *path;
    const uint8_t *base; /* whole file image */
    size_t len;
    int mmapped;
    uint64_t data_start; /* 8 + header length */
} shard_t;

typedef struct {
    char *name;
    msbnb_dtype dtype;
    int ndim;
    int64_t shape[MSBNB_ST_MAX_DIMS];
    int64_t numel;
    uint64_t begin, end; /* relative to the data region */
    int shard;
} entry_t;

struct msbnb_st_file {
    shard_t *shards;
    int nshards;
    entry_t *e;
    size_t n, cap;
    size_t *by_name; /* indices sorted by name */
    char **meta_k, **meta_v;
    size_t nmeta;
};

static const char *lbl(const char *label) { return label ? label : "<memory>"; }

/* Strict UTF-8 (no overlongs, no surrogates), as serde_json requires of the header. */
static int utf8_valid(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) { i++; continue; }
        int len;
        uint32_t cp;
        if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
        else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
        else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
        else return 0;
        if (i + (size_t)len > n) return 0;
        for (int k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += (size_t)len;
    }
    return 1;
}

/* A JSON number that is a non-negative integer exactly representable (<= 2^53). */
static int json_u64(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!(d >= 0.0) || d > 9007199254740992.0 || d != (double)(uint64_t)d) return 0;
    *out = (uint64_t)d;
    return 1;
}

static msbnb_status push_entry(msbnb_st_file_t *f, entry_t *e) {
    if (f->n == f->cap) {
        size_t nc = f->cap ? f->cap * 2 : 64;
        entry_t *ne = realloc(f->e, nc * sizeof *ne);
        if (!ne) return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "safetensors: out of memory");
        f->e = ne;
        f->cap = nc;
    }
    f->e[f->n++] = *e;
    return MSBNB_OK;
}

static int cmp_begin(const void *a, const void *b) {
    const entry_t *x = *(const entry_t *const *)a, *y = *(const entry_t *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static msbnb_status parse_metadata(msbnb_st_file_t *f, const cJSON *m, const char *label,
                                   int keep) {
    if (!cJSON_IsObject(m))
        return msbnb__fail(MSBNB_ERR_FORMAT, "%s: \"__metadata__\" is not an object", label);
    size_t cnt = 0;
    for (const cJSON *c = m->child; c; c = c->next) {
        if (!cJSON_IsString(c))
            return msbnb__fail(MSBNB_ERR_FORMAT, "%s: metadata value '%s' is not a string",
                               label, c->string ? c->string : "");
        cnt++;
    }
    if (!keep || cnt == 0) return MSBNB_OK;
    f->meta_k = calloc(cnt, sizeof(char *));
    f->meta_v = calloc(cnt, sizeof(char *));
    if (!f->meta_k || !f->meta_v) return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
    for (const cJSON *c = m->child; c; c = c->next) {
        f->meta_k[f->nmeta] = strdup(c->string ? c->string : "");
        f->meta_v[f->nmeta] = strdup(c->valuestring);
        if (!f->meta_k[f->nmeta] || !f->meta_v[f->nmeta]) {
            free(f->meta_k[f->nmeta]);
            free(f->meta_v[f->nmeta]);
            return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
        }
        f->nmeta++;
    }
    return MSBNB_OK;
}

static msbnb_status parse_entry(entry_t *e, const cJSON *t, const char *label) {
    const char *name = t->string;
    if (!cJSON_IsObject(t))
        return msbnb__fail(MSBNB_ERR_FORMAT, "%s: tensor '%s': entry is not an object", label, name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(t, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(t, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(t, "data_offsets");
    if (!cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(off))
        return msbnb__fail(MSBNB_ERR_FORMAT,
                           "%s: tensor '%s': needs string \"dtype\", array \"shape\" and array "
                           "\"data_offsets\"", label, name);
    for (const cJSON *c = t->child; c; c = c->next)
        if (strcmp(c->string, "dtype") && strcmp(c->string, "shape") &&
            strcmp(c->string, "data_offsets"))
            return msbnb__fail(MSBNB_ERR_FORMAT, "%s: tensor '%s': unknown field '%s'", label,
                               name, c->string);
    if (msbnb_dtype_from_name(dt->valuestring, &e->dtype) != MSBNB_OK)
        return msbnb__fail(MSBNB_ERR_FORMAT, "%s: tensor '%s': unsupported dtype '%s'", label,
                           name, dt->valuestring);
    int nd = cJSON_GetArraySize(sh);
    if (nd > MSBNB_ST_MAX_DIMS)
        return msbnb__fail(MSBNB_ERR_FORMAT, "%s: tensor '%s': %d dimensions (at most %d)",
                           label, name, nd, MSBNB_ST_MAX_DIMS);
    e->ndim = nd;
    int64_t numel = 1;
    int i = 0;
    for (const cJSON *c = sh->child; c; c = c->next, i++) {
        uint64_t d;
        if (!json_u64(c, &d))
            return msbnb__fail(MSBNB_ERR_FORMAT,
                               "%s: tensor '%s': shape entry %d is not a non-negative integer",
                               label, name, i);
        e->shape[i] = (int64_t)d;
        if (!msbnb__mul_ok(numel, (int64_t)d, &numel))
            return msbnb__fail(MSBNB_ERR_FORMAT, "%s: tensor '%s': shape product overflows",
                               label, name);
    }
    e->numel = numel;
    int64_t nbytes;
    if (!msbnb__mul_ok(numel, (int64_t)msbnb_dtype_size(e->dtype), &nbytes))
        return msbnb__fail(MSBNB_ERR_FORMAT, "%s: tensor '%s': byte size overflows", label, name);
    if (cJSON_GetArraySize(off) != 2 || !json_u64(off->child, &e->begin) ||
        !json_u64(off->child->next, &e->end))
        return msbnb__fail(MSBNB_ERR_FORMAT,
                           "%s: tensor '%s': data_offsets must be two non-negative integers",
                           label, name);
    if (e->end < e->begin)
        return msbnb__fail(MSBNB_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] end before begin",
                           label, name, (unsigned long long)e->begin, (unsigned long long)e->end);
    if (e->end - e->begin != (uint64_t)nbytes)
        return msbnb__fail(MSBNB_ERR_FORMAT,
                           "%s: tensor '%s': data_offsets span %llu bytes but dtype %s x shape "
                           "needs %lld", label, name, (unsigned long long)(e->end - e->begin),
                           dt->valuestring, (long long)nbytes);
    return MSBNB_OK;
}

/* Validates one file image and appends its tensors as shard `shard`. */
static msbnb_status parse_image(msbnb_st_file_t *f, int shard, const uint8_t *buf, size_t len,
                                const char *label) {
    if (len < 8)
        return msbnb__fail(MSBNB_ERR_FORMAT, "%s: file of %zu bytes is too short for a "
                           "safetensors header", label, len);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | buf[i];
    if (hl > MSBNB_ST_MAX_HEADER)
        return msbnb__fail(MSBNB_ERR_FORMAT, "%s: header length %llu exceeds the limit of %llu",
                           label, (unsigned long long)hl, (unsigned long long)MSBNB_ST_MAX_HEADER);
    if (hl > len - 8)
        return msbnb__fail(MSBNB_ERR_FORMAT,
                           "%s: header length %llu runs past the end of the file (%zu bytes): "
                           "truncated?", label, (unsigned long long)hl, len);
    if (hl < 2 || buf[8] != '{')
        return msbnb__fail(MSBNB_ERR_FORMAT, "%s: header is not a JSON object", label);
    const char *h = (const char *)buf + 8;
    if (memchr(h, 0, hl) || !utf8_valid((const uint8_t *)h, hl))
        return msbnb__fail(MSBNB_ERR_FORMAT, "%s: header is not valid UTF-8 text", label);
    const char *endp = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(h, hl, &endp, 0);
    if (!root || !cJSON_IsObject(root)) {
        size_t at = (root == NULL && cJSON_GetErrorPtr()) ? (size_t)(cJSON_GetErrorPtr() - h) : 0;
        cJSON_Delete(root);
        return msbnb__fail(MSBNB_ERR_FORMAT, "%s: header is not valid JSON (near byte %zu)",
                           label, at);
    }
    for (const char *p = endp; p < h + hl; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            cJSON_Delete(root);
            return msbnb__fail(MSBNB_ERR_FORMAT, "%s: trailing bytes after the JSON header", label);
        }
    uint64_t data_len = len - 8 - hl;
    size_t first = f->n;
    msbnb_status st = MSBNB_OK;
    int seen_meta = 0;
    for (const cJSON *t = root->child; t && st == MSBNB_OK; t = t->next) {
        if (!t->string || !t->string[0]) {
            st = msbnb__fail(MSBNB_ERR_FORMAT, "%s: empty tensor name", label);
            break;
        }
        if (strcmp(t->string, "__metadata__") == 0) {
            if (seen_meta++) st = msbnb__fail(MSBNB_ERR_FORMAT, "%s: duplicate \"__metadata__\"", label);
            else st = parse_metadata(f, t, label, shard == 0);
            continue;
        }
        entry_t e;
        memset(&e, 0, sizeof e);
        st = parse_entry(&e, t, label);
        if (st != MSBNB_OK) break;
        e.shard = shard;
        e.name = strdup(t->string);
        if (!e.name) {
            st = msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
            break;
        }
        st = push_entry(f, &e);
        if (st != MSBNB_OK) free(e.name);
    }
    cJSON_Delete(root);
    if (st != MSBNB_OK) return st;
    /* Offsets: sorted by begin they must tile [0, data_len) exactly (reference validator). */
    size_t cnt = f->n - first;
    entry_t **ord = cnt ? malloc(cnt * sizeof *ord) : NULL;
    if (cnt && !ord) return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
    for (size_t i = 0; i < cnt; i++) ord[i] = &f->e[first + i];
    if (cnt > 1) qsort(ord, cnt, sizeof *ord, cmp_begin);
    uint64_t expect = 0;
    for (size_t i = 0; i < cnt && st == MSBNB_OK; i++) {
        const entry_t *e = ord[i];
        if (e->begin < expect)
            st = msbnb__fail(MSBNB_ERR_FORMAT,
                             "%s: tensor '%s': data_offsets [%llu, %llu] overlap the previous "
                             "tensor (ends at %llu)", label, e->name, (unsigned long long)e->begin,
                             (unsigned long long)e->end, (unsigned long long)expect);
        else if (e->begin > expect)
            st = msbnb__fail(MSBNB_ERR_FORMAT,
                             "%s: tensor '%s': data_offsets [%llu, %llu] leave a gap after %llu",
                             label, e->name, (unsigned long long)e->begin,
                             (unsigned long long)e->end, (unsigned long long)expect);
        else if (e->end > data_len)
            st = msbnb__fail(MSBNB_ERR_FORMAT,
                             "%s: tensor '%s': data_offsets [%llu, %llu] run past the data "
                             "region (%llu bytes): truncated?", label, e->name,
                             (unsigned long long)e->begin, (unsigned long long)e->end,
                             (unsigned long long)data_len);
        expect = e->end;
    }
    free(ord);
    if (st == MSBNB_OK && expect != data_len)
        st = msbnb__fail(MSBNB_ERR_FORMAT,
                         "%s: tensors cover %llu bytes but the data region has %llu", label,
                         (unsigned long long)expect, (unsigned long long)data_len);
    if (st != MSBNB_OK) return st;
    f->shards[shard].data_start = 8 + hl;
    return MSBNB_OK;
}

static int cmp_name_idx(const void *a, const void *b, void *ctx) {
    const entry_t *e = ctx;
    return strcmp(e[*(const size_t *)a].name, e[*(const size_t *)b].name);
}

/* Storage order: shard, then begin offset. */
static int cmp_storage(const void *a, const void *b) {
    const entry_t *x = a, *y = b;
    if (x->shard != y->shard) return x->shard < y->shard ? -1 : 1;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : (x->end > y->end);
}

static msbnb_status finalize(msbnb_st_file_t *f) {
    if (f->n) qsort(f->e, f->n, sizeof *f->e, cmp_storage);
    f->by_name = malloc((f->n ? f->n : 1) * sizeof(size_t));
    if (!f->by_name) return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
    for (size_t i = 0; i < f->n; i++) f->by_name[i] = i;
    if (f->n) qsort_r(f->by_name, f->n, sizeof(size_t), cmp_name_idx, f->e);
    for (size_t i = 1; i < f->n; i++) {
        const entry_t *a = &f->e[f->by_name[i - 1]], *b = &f->e[f->by_name[i]];
        if (strcmp(a->name, b->name) == 0)
            return msbnb__fail(MSBNB_ERR_FORMAT, "%s: duplicate tensor name '%s'%s%s",
                               f->shards[b->shard].path, b->name,
                               a->shard != b->shard ? " (also in " : "",
                               a->shard != b->shard ? f->shards[a->shard].path : "");
    }
    return MSBNB_OK;
}

static msbnb_st_file_t *new_file(int nshards) {
    msbnb_st_file_t *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    f->shards = calloc((size_t)nshards, sizeof *f->shards);
    if (!f->shards) {
        free(f);
        return NULL;
    }
    f->nshards = nshards;
    return f;
}

void msbnb_st_close(msbnb_st_file_t *f) {
    if (!f) return;
    for (int i = 0; i < f->nshards; i++) {
        if (f->shards[i].mmapped && f->shards[i].base)
            munmap((void *)f->shards[i].base, f->shards[i].len);
        free(f->shards[i].path);
    }
    for (size_t i = 0; i < f->n; i++) free(f->e[i].name);
    for (size_t i = 0; i < f->nmeta; i++) {
        free(f->meta_k[i]);
        free(f->meta_v[i]);
    }
    free(f->meta_k);
    free(f->meta_v);
    free(f->e);
    free(f->by_name);
    free(f->shards);
    free(f);
}

msbnb_status msbnb_st_open_memory(msbnb_st_file_t **out, const void *buf, size_t len,
                                  const char *label) {
    MSBNB_CHECK_NULL(out);
    *out = NULL;
    if (!buf && len) return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: buf is NULL", __func__);
    msbnb_st_file_t *f = new_file(1);
    if (!f) return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
    f->shards[0].path = strdup(lbl(label));
    f->shards[0].base = buf;
    f->shards[0].len = len;
    msbnb_status st = f->shards[0].path ? MSBNB_OK
                                        : msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
    if (st == MSBNB_OK) st = parse_image(f, 0, buf ? buf : (const void *)"", len, lbl(label));
    if (st == MSBNB_OK) st = finalize(f);
    if (st != MSBNB_OK) {
        msbnb_st_close(f);
        return st;
    }
    *out = f;
    return MSBNB_OK;
}

static msbnb_status map_shard(shard_t *s, const char *path) {
    s->path = strdup(path);
    if (!s->path) return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return msbnb__fail(MSBNB_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return msbnb__fail(MSBNB_ERR_IO, "%s: not a regular file", path);
    }
    if (sb.st_size < 8) {
        close(fd);
        return msbnb__fail(MSBNB_ERR_FORMAT, "%s: file of %lld bytes is too short for a "
                           "safetensors header", path, (long long)sb.st_size);
    }
    void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) return msbnb__fail(MSBNB_ERR_IO, "%s: mmap failed: %s", path, strerror(errno));
    s->base = m;
    s->len = (size_t)sb.st_size;
    s->mmapped = 1;
    return MSBNB_OK;
}

static msbnb_status open_index(msbnb_st_file_t **out, const char *index_path) {
    char *text = NULL;
    size_t tlen = 0;
    MSBNB_TRY(msbnb__read_text_file(index_path, 64u << 20, &text, &tlen));
    cJSON *root = cJSON_ParseWithLength(text, tlen);
    free(text);
    const cJSON *wm = root ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    if (!cJSON_IsObject(wm)) {
        cJSON_Delete(root);
        return msbnb__fail(MSBNB_ERR_FORMAT, "%s: not a safetensors index (no \"weight_map\" object)",
                           index_path);
    }
    /* Unique shard names, in order of first appearance. */
    int nsh = 0, cap = cJSON_GetArraySize(wm);
    const char **names = calloc((size_t)(cap ? cap : 1), sizeof *names);
    msbnb_status st = names ? MSBNB_OK : msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
    for (const cJSON *c = wm->child; c && st == MSBNB_OK; c = c->next) {
        if (!cJSON_IsString(c) || !c->valuestring[0] || strchr(c->valuestring, '/') ||
            strcmp(c->valuestring, "..") == 0 || strcmp(c->valuestring, ".") == 0) {
            st = msbnb__fail(MSBNB_ERR_FORMAT, "%s: tensor '%s': shard must be a plain file name",
                             index_path, c->string ? c->string : "");
            break;
        }
        int k = 0;
        while (k < nsh && strcmp(names[k], c->valuestring)) k++;
        if (k == nsh) names[nsh++] = c->valuestring;
    }
    if (st == MSBNB_OK && nsh == 0)
        st = msbnb__fail(MSBNB_ERR_FORMAT, "%s: empty weight_map", index_path);
    msbnb_st_file_t *f = NULL;
    if (st == MSBNB_OK) {
        f = new_file(nsh);
        if (!f) st = msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
    }
    char *dir = st == MSBNB_OK ? msbnb__dirname(index_path) : NULL;
    if (st == MSBNB_OK && !dir) st = msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
    for (int s = 0; s < nsh && st == MSBNB_OK; s++) {
        char *p = msbnb__path_join(dir, names[s]);
        if (!p) {
            st = msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
            break;
        }
        st = map_shard(&f->shards[s], p);
        if (st == MSBNB_OK) st = parse_image(f, s, f->shards[s].base, f->shards[s].len, p);
        free(p);
    }
    free(dir);
    if (st == MSBNB_OK) st = finalize(f);
    /* Every weight_map entry must name a tensor of the shard it points to. */
    for (const cJSON *c = wm->child; c && st == MSBNB_OK; c = c->next) {
        msbnb_st_tensor_info ti;
        if (msbnb_st_find(f, c->string, &ti) != MSBNB_OK)
            st = msbnb__fail(MSBNB_ERR_FORMAT, "%s: tensor '%s' listed in weight_map is missing "
                             "from %s", index_path, c->string, c->valuestring);
        else if (strcmp(names[ti.shard], c->valuestring) != 0)
            st = msbnb__fail(MSBNB_ERR_FORMAT, "%s: tensor '%s' is in %s, weight_map says %s",
                             index_path, c->string, names[ti.shard], c->valuestring);
    }
    free(names);
    cJSON_Delete(root);
    if (st != MSBNB_OK) {
        msbnb_st_close(f);
        return st;
    }
    *out = f;
    return MSBNB_OK;
}

msbnb_status msbnb_st_open(msbnb_st_file_t **out, const char *path) {
    MSBNB_CHECK_NULL(out);
    MSBNB_CHECK_NULL(path);
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0) return msbnb__fail(MSBNB_ERR_IO, "%s: %s", path, strerror(errno));
    if (S_ISDIR(sb.st_mode)) {
        char *single = msbnb__path_join(path, "model.safetensors");
        char *index = msbnb__path_join(path, "model.safetensors.index.json");
        msbnb_status st;
        if (!single || !index) st = msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
        else if (access(single, F_OK) == 0) st = msbnb_st_open(out, single);
        else if (access(index, F_OK) == 0) st = open_index(out, index);
        else st = msbnb__fail(MSBNB_ERR_NOT_FOUND, "%s: no model.safetensors or "
                              "model.safetensors.index.json in this directory", path);
        free(single);
        free(index);
        return st;
    }
    size_t pl = strlen(path);
    if (pl >= 5 && strcmp(path + pl - 5, ".json") == 0) return open_index(out, path);
    msbnb_st_file_t *f = new_file(1);
    if (!f) return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
    msbnb_status st = map_shard(&f->shards[0], path);
    if (st == MSBNB_OK) st = parse_image(f, 0, f->shards[0].base, f->shards[0].len, path);
    if (st == MSBNB_OK) st = finalize(f);
    if (st != MSBNB_OK) {
        msbnb_st_close(f);
        return st;
    }
    *out = f;
    return MSBNB_OK;
}

size_t msbnb_st_count(const msbnb_st_file_t *f) { return f ? f->n : 0; }

static void fill_info(const msbnb_st_file_t *f, const entry_t *e, msbnb_st_tensor_info *o) {
    memset(o, 0, sizeof *o);
    o->name = e->name;
    o->dtype = e->dtype;
    o->ndim = e->ndim;
    memcpy(o->shape, e->shape, sizeof o->shape);
    o->numel = e->numel;
    o->nbytes = e->end - e->begin;
    o->data = o->nbytes ? f->shards[e->shard].base + f->shards[e->shard].data_start + e->begin : NULL;
    o->shard = e->shard;
}

msbnb_status msbnb_st_get(const msbnb_st_file_t *f, size_t i, msbnb_st_tensor_info *out) {
    MSBNB_CHECK_NULL(f);
    MSBNB_CHECK_NULL(out);
    if (i >= f->n)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: index %zu out of range (%zu tensors)",
                           __func__, i, f->n);
    fill_info(f, &f->e[i], out);
    return MSBNB_OK;
}

static const entry_t *find(const msbnb_st_file_t *f, const char *name) {
    size_t lo = 0, hi = f->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(f->e[f->by_name[mid]].name, name);
        if (c == 0) return &f->e[f->by_name[mid]];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

msbnb_status msbnb_st_find(const msbnb_st_file_t *f, const char *name, msbnb_st_tensor_info *out) {
    MSBNB_CHECK_NULL(f);
    MSBNB_CHECK_NULL(name);
    MSBNB_CHECK_NULL(out);
    const entry_t *e = find(f, name);
    if (!e) return msbnb__fail(MSBNB_ERR_NOT_FOUND, "tensor '%s' not found", name);
    fill_info(f, e, out);
    return MSBNB_OK;
}

int msbnb__st_has(const msbnb_st_file_t *f, const char *name) { return find(f, name) != NULL; }

const char *msbnb_st_metadata(const msbnb_st_file_t *f, const char *key) {
    if (!f || !key) return NULL;
    for (size_t i = 0; i < f->nmeta; i++)
        if (strcmp(f->meta_k[i], key) == 0) return f->meta_v[i];
    return NULL;
}

int msbnb_st_shard_count(const msbnb_st_file_t *f) { return f ? f->nshards : 0; }

const char *msbnb_st_shard_path(const msbnb_st_file_t *f, int shard) {
    if (!f || shard < 0 || shard >= f->nshards) return NULL;
    return f->shards[shard].path;
}

void msbnb__st_populate(const msbnb_st_file_t *f, size_t i) {
    if (!f || i >= f->n) return;
    const entry_t *e = &f->e[i];
    const shard_t *s = &f->shards[e->shard];
    if (!s->mmapped || e->end == e->begin) return;
    long pg = sysconf(_SC_PAGESIZE);
    if (pg <= 0) return;
    uintptr_t a = (uintptr_t)(s->base + s->data_start + e->begin);
    uintptr_t b = (uintptr_t)(s->base + s->data_start + e->end);
    a &= ~(uintptr_t)(pg - 1);
#ifdef MADV_POPULATE_READ
    /* One call maps the whole range (Linux 5.14+) instead of a page fault per 64 KiB;
     * older kernels refuse it and the reads fault the pages in as usual. */
    (void)madvise((void *)a, b - a, MADV_POPULATE_READ);
#endif
}

void msbnb_st_release(const msbnb_st_file_t *f, size_t i) {
    if (!f || i >= f->n) return;
    const entry_t *e = &f->e[i];
    const shard_t *s = &f->shards[e->shard];
    if (!s->mmapped || e->end == e->begin) return;
    long pg = sysconf(_SC_PAGESIZE);
    if (pg <= 0) return;
    uintptr_t a = (uintptr_t)(s->base + s->data_start + e->begin);
    uintptr_t b = (uintptr_t)(s->base + s->data_start + e->end);
    a &= ~(uintptr_t)(pg - 1);
    /* The pages are clean file pages of a read-only private mapping: dropping them only
     * costs a re-read from the page cache. */
    madvise((void *)a, b - a, MADV_DONTNEED);
}
