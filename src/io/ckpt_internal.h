/* Internal glue of the whole-checkpoint conversions (convert.c, dequant_ckpt.c,
 * ckpt_dir.c). */
#ifndef MSBNB_CKPT_INTERNAL_H
#define MSBNB_CKPT_INTERNAL_H

#include "io_internal.h"
#include "msbnb/convert.h"

/* An output folder under construction: files go to `tmp` (a sibling of `final`), which
 * is renamed onto `final` by commit; abort deletes it. */
typedef struct {
    char *final, *tmp;
    int committed;
} msbnb__outdir;

/* Checks that out_dir does not exist or is an empty directory, creates the temporary
 * sibling. */
msbnb_status msbnb__outdir_begin(msbnb__outdir *o, const char *out_dir);
/* malloc'd path of `name` inside the temporary folder. */
char *msbnb__outdir_path(const msbnb__outdir *o, const char *name);
/* fsync, rename onto the final name, fsync the parent. */
msbnb_status msbnb__outdir_commit(msbnb__outdir *o);
/* Deletes the temporary folder unless committed, and frees o. */
void msbnb__outdir_abort(msbnb__outdir *o);

/* Folder whose side files belong to the checkpoint at in_path (a directory, or the folder
 * of an index .json); NULL for a lone .safetensors file. malloc'd. */
char *msbnb__input_folder(const char *in_path);
/* Copies the folder's regular files except safetensors shards and indexes into o;
 * config.json is rewritten with its quantization_config replaced by qblock (removed when
 * qblock is NULL). */
msbnb_status msbnb__copy_side_files(const char *in_dir, const msbnb__outdir *o, const char *qblock);
/* Writes model.safetensors.index.json (names sorted, shard_of[i] indexes shard_names). */
msbnb_status msbnb__write_index(const msbnb__outdir *o, const char *const *names,
                                const int *shard_of, size_t n, const char *const *shard_names,
                                uint64_t total_size);
/* A thread-local copy of msbnb_last_error(), safe to pass to msbnb__fail. */
const char *msbnb__errcopy(void);

/* Module type for the summary: last name component ("q_proj"). */
void msbnb__module_kind(const char *module, char *out, size_t cap);
/* Adds one tensor to the report's per-kind rows. */
void msbnb__report_add(msbnb_convert_report *r, const char *kind, uint64_t in, uint64_t out,
                       double rel_err);
/* Monotonic seconds. */
double msbnb__now(void);
/* Prefixes the current error message with "<file>: tensor '<tensor>': ". */
msbnb_status msbnb__wrap(msbnb_status st, const char *file, const char *tensor);
/* Dequantizes the tensors of input shard s into w (declare, begin, write), updating the
 * report and calling the progress callback. */
msbnb_status msbnb__dequant_shard(const msbnb_convert_options *opt, const msbnb_st_file_t *f,
                                  int s, msbnb_st_writer_t *w, msbnb_convert_report *rep,
                                  int64_t *done, uint64_t *bytes_done, int64_t total,
                                  uint64_t bytes_total, double t0);
/* What a tensor of a (possibly quantized) checkpoint is: 0 a plain tensor, 1 the weight
 * of a quantized module, 2 another part of a quantized module; *module_len (may be NULL)
 * gets the length of the module-name prefix (0 for plain tensors). */
int msbnb__ckpt_classify(const msbnb_st_file_t *f, const char *name, size_t *module_len);
#endif
