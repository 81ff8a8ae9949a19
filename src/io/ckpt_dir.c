/* Output folders for whole-checkpoint conversions: a temporary sibling directory that is
 * renamed onto the final name only when complete (rename(2) replaces an empty directory
 * atomically), the side files of a Hugging Face folder (config.json rewritten, the rest
 * copied), and the shard index. */
#include "ckpt_internal.h"

#include "internal.h"
#include "qconfig_internal.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

static int dir_is_empty(const char *path) {
    DIR *d = opendir(path);
    if (!d) return 0;
    struct dirent *e;
    int empty = 1;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            empty = 0;
            break;
        }
    closedir(d);
    return empty;
}

msbnb_status msbnb__outdir_begin(msbnb__outdir *o, const char *out_dir) {
    memset(o, 0, sizeof *o);
    if (!out_dir[0]) return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "output folder name is empty");
    struct stat sb;
    if (stat(out_dir, &sb) == 0) {
        if (!S_ISDIR(sb.st_mode) || !dir_is_empty(out_dir))
            return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "output '%s' exists and is not an "
                               "empty directory", out_dir);
    }
    size_t n = strlen(out_dir);
    while (n > 1 && out_dir[n - 1] == '/') n--;
    o->final = malloc(n + 1);
    o->tmp = malloc(n + 32);
    if (!o->final || !o->tmp) {
        msbnb__outdir_abort(o);
        return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
    }
    memcpy(o->final, out_dir, n);
    o->final[n] = 0;
    snprintf(o->tmp, n + 32, "%s.msbnb-tmp-XXXXXX", o->final);
    if (!mkdtemp(o->tmp)) {
        msbnb_status st = msbnb__fail(MSBNB_ERR_IO, "cannot create a temporary folder next to "
                                      "'%s': %s", o->final, strerror(errno));
        msbnb__outdir_abort(o);
        return st;
    }
    return MSBNB_OK;
}

char *msbnb__outdir_path(const msbnb__outdir *o, const char *name) {
    return msbnb__path_join(o->tmp, name);
}

void msbnb__outdir_abort(msbnb__outdir *o) {
    if (o->tmp && o->tmp[0] && !o->committed) {
        DIR *d = opendir(o->tmp);
        if (d) {
            struct dirent *e;
            while ((e = readdir(d)) != NULL) {
                if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
                char *p = msbnb__path_join(o->tmp, e->d_name);
                if (p) unlink(p);
                free(p);
            }
            closedir(d);
            rmdir(o->tmp);
        }
    }
    free(o->tmp);
    free(o->final);
    memset(o, 0, sizeof *o);
}

msbnb_status msbnb__outdir_commit(msbnb__outdir *o) {
    MSBNB_TRY(msbnb__fsync_dir(o->tmp));
    if (rename(o->tmp, o->final) != 0)
        return msbnb__fail(MSBNB_ERR_IO, "cannot rename '%s' to '%s': %s", o->tmp, o->final,
                           strerror(errno));
    o->committed = 1;
    char *parent = msbnb__dirname(o->final);
    msbnb_status st = parent ? msbnb__fsync_dir(parent) : msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
    free(parent);
    return st;
}

char *msbnb__input_folder(const char *in_path) {
    struct stat sb;
    if (stat(in_path, &sb) == 0 && S_ISDIR(sb.st_mode)) return strdup(in_path);
    if (ends_with(in_path, ".json")) return msbnb__dirname(in_path);
    return NULL;
}

msbnb_status msbnb__copy_side_files(const char *in_dir, const msbnb__outdir *o,
                                    const char *qblock) {
    msbnb_status st = MSBNB_OK;
    DIR *d = opendir(in_dir);
    if (!d) return MSBNB_OK; /* a lone file: nothing beside it to carry over */
    struct dirent *e;
    while (st == MSBNB_OK && (e = readdir(d)) != NULL) {
        const char *nm = e->d_name;
        if (nm[0] == '.' || ends_with(nm, ".safetensors") || ends_with(nm, ".safetensors.index.json"))
            continue;
        char *src = msbnb__path_join(in_dir, nm), *dst = msbnb__outdir_path(o, nm);
        struct stat sb;
        if (!src || !dst) st = msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
        else if (stat(src, &sb) != 0 || !S_ISREG(sb.st_mode)) {
            /* subfolders and special files are not part of a checkpoint */
        } else {
            char *text = NULL;
            size_t len = 0;
            st = msbnb__read_text_file(src, (size_t)1 << 30, &text, &len);
            if (st == MSBNB_OK && strcmp(nm, "config.json") == 0) {
                msbnb__sbuf b = {0};
                st = msbnb__hf_config_rewrite(text, len, qblock, &b);
                if (st != MSBNB_OK)
                    st = msbnb__fail(st, "%s: %s", src, msbnb__errcopy());
                else
                    st = msbnb__write_file_atomic(dst, b.s, b.len);
                msbnb__sb_free(&b);
            } else if (st == MSBNB_OK) {
                st = msbnb__write_file_atomic(dst, text, len);
            }
            free(text);
        }
        free(src);
        free(dst);
    }
    closedir(d);
    return st;
}

const char *msbnb__errcopy(void) {
    static _Thread_local char buf[1024];
    snprintf(buf, sizeof buf, "%s", msbnb_last_error());
    return buf;
}

msbnb_status msbnb__write_index(const msbnb__outdir *o, const char *const *names,
                                const int *shard_of, size_t n, const char *const *shard_names,
                                uint64_t total_size) {
    /* transformers' save_pretrained: json.dumps(index, indent=2, sort_keys=True) + "\n",
     * {"metadata": {"total_size": N}, "weight_map": {name: file}}. names are sorted. */
    msbnb__sbuf b = {0};
    msbnb__sb_printf(&b, "{\n  \"metadata\": {\n    \"total_size\": %llu\n  },\n  \"weight_map\": {\n",
                     (unsigned long long)total_size);
    for (size_t i = 0; i < n; i++) {
        msbnb__sb_puts(&b, "    ");
        msbnb__sb_json_str(&b, names[i]);
        msbnb__sb_puts(&b, ": ");
        msbnb__sb_json_str(&b, shard_names[shard_of[i]]);
        msbnb__sb_puts(&b, i + 1 < n ? ",\n" : "\n");
    }
    msbnb__sb_puts(&b, "  }\n}\n");
    msbnb_status st;
    if (b.err) st = msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
    else {
        char *p = msbnb__outdir_path(o, "model.safetensors.index.json");
        st = p ? msbnb__write_file_atomic(p, b.s, b.len) : msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
        free(p);
    }
    msbnb__sb_free(&b);
    return st;
}
