/* msbnb/safetensors.h — reading and writing safetensors files.
 *
 * Format (https://github.com/huggingface/safetensors): 8-byte little-endian header
 * length N, N bytes of JSON {"__metadata__": {str: str}, name: {"dtype", "shape",
 * "data_offsets": [begin, end]}}, then the data region; offsets are relative to it.
 *
 * Reader: the file is mmapped read-only; tensor data pointers are borrowed and live as
 * long as the handle. They may be unaligned (safetensors does not align data): copy with
 * memcpy before reading multi-byte elements. Every header is validated strictly before
 * any tensor is exposed (header length bound, JSON, known dtypes, shapes without
 * overflow, dtype x shape == byte size, offsets contiguous inside the data region, no
 * duplicate names); a malformed file gives MSBNB_ERR_FORMAT with a message naming the
 * file and the tensor. A handle is immutable after open: concurrent reads are safe.
 *
 * Writer: tensors are declared first (name, dtype, shape), then the header is written and
 * the data may be written in any order, from several threads, in pieces. Output goes to
 * a temporary file in the destination directory that is fsynced and renamed onto the
 * final name only by msbnb_st_writer_finish(): a failed or abandoned write never leaves a
 * partial file under the final name. Data are laid out as the reference implementation
 * does (sorted by dtype, widest first, then by name; header padded with spaces to a
 * multiple of 8), so msbnb writes files byte-identical to safetensors' save_file.
 */
#ifndef MSBNB_SAFETENSORS_H
#define MSBNB_SAFETENSORS_H

#include "msbnb/core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MSBNB_ST_MAX_DIMS 8
/* Largest accepted header (the reference implementation's limit). */
#define MSBNB_ST_MAX_HEADER 100000000ULL

typedef struct msbnb_st_file msbnb_st_file_t;

/* One tensor as described by the header. `name` and `data` are borrowed from the file
 * handle; `data` may be unaligned and is NULL for zero-byte tensors. */
typedef struct msbnb_st_tensor_info {
    const char *name;
    msbnb_dtype dtype;
    int ndim;                          /* 0 for a scalar */
    int64_t shape[MSBNB_ST_MAX_DIMS];
    int64_t numel;                     /* product of shape (1 for a scalar) */
    uint64_t nbytes;
    const void *data;
    int shard;                         /* index of the shard file holding it */
} msbnb_st_tensor_info;

/* Opens a checkpoint: a .safetensors file, a sharded index (model.safetensors.index.json),
 * or a directory holding model.safetensors or model.safetensors.index.json. Every shard is
 * mmapped and validated; tensor names must be unique across shards and agree with the
 * index. *out receives a handle to free with msbnb_st_close. Errors: MSBNB_ERR_IO (open,
 * mmap), MSBNB_ERR_FORMAT (malformed file, message names file and tensor),
 * MSBNB_ERR_NOT_FOUND (directory without a checkpoint), MSBNB_ERR_OUT_OF_MEMORY. */
MSBNB_API msbnb_status msbnb_st_open(msbnb_st_file_t **out, const char *path);

/* Parses and validates a safetensors image held in memory (borrowed: it must outlive the
 * handle). `label` names it in error messages (may be NULL). Same checks as a file. */
MSBNB_API msbnb_status msbnb_st_open_memory(msbnb_st_file_t **out, const void *buf, size_t len,
                                            const char *label);

/* Releases the handle and its mappings. Accepts NULL. */
MSBNB_API void msbnb_st_close(msbnb_st_file_t *f);

/* Number of tensors (all shards). */
MSBNB_API size_t msbnb_st_count(const msbnb_st_file_t *f);

/* Tensor i in storage order (shard by shard, increasing offset). MSBNB_ERR_INVALID_ARGUMENT
 * for i out of range. */
MSBNB_API msbnb_status msbnb_st_get(const msbnb_st_file_t *f, size_t i, msbnb_st_tensor_info *out);

/* Tensor by name: MSBNB_ERR_NOT_FOUND if absent (out untouched). */
MSBNB_API msbnb_status msbnb_st_find(const msbnb_st_file_t *f, const char *name,
                                     msbnb_st_tensor_info *out);

/* Value of a "__metadata__" entry of the first shard, or NULL (borrowed). */
MSBNB_API const char *msbnb_st_metadata(const msbnb_st_file_t *f, const char *key);

/* Number of shard files and the path of one (borrowed). */
MSBNB_API int msbnb_st_shard_count(const msbnb_st_file_t *f);
MSBNB_API const char *msbnb_st_shard_path(const msbnb_st_file_t *f, int shard);

/* Hint that tensor i's pages will not be read again soon: drops them from this process'
 * resident set (the data stay readable; they are paged in again on access). Lets a
 * streaming pass over a large checkpoint run in bounded memory. No-op for memory images. */
MSBNB_API void msbnb_st_release(const msbnb_st_file_t *f, size_t i);

/* ---------------------------------------------------------------- writer */

typedef struct msbnb_st_writer msbnb_st_writer_t;

/* Starts a file to be written to `path` (final name; nothing is created there before
 * finish). The handle is freed with msbnb_st_writer_free. */
MSBNB_API msbnb_status msbnb_st_writer_create(msbnb_st_writer_t **out, const char *path);

/* Adds a "__metadata__" string entry (before begin). Duplicate keys: error. */
MSBNB_API msbnb_status msbnb_st_writer_set_metadata(msbnb_st_writer_t *w, const char *key,
                                                    const char *value);

/* Declares a tensor (before begin). Names are copied; "__metadata__", empty
 * names, bad dtypes, negative dims, more than MSBNB_ST_MAX_DIMS dims and size overflow
 * are errors. */
MSBNB_API msbnb_status msbnb_st_writer_add(msbnb_st_writer_t *w, const char *name,
                                           msbnb_dtype dtype, const int64_t *shape, int ndim);

/* Lays out the data, creates the temporary file and writes the header. Duplicate tensor
 * names are reported here (MSBNB_ERR_INVALID_ARGUMENT). */
MSBNB_API msbnb_status msbnb_st_writer_begin(msbnb_st_writer_t *w);

/* Writes bytes [offset, offset + nbytes) of a declared tensor's data (after begin).
 * Thread-safe: distinct pieces may be written concurrently. Writing past the tensor's
 * size: MSBNB_ERR_INVALID_ARGUMENT; unknown name: MSBNB_ERR_NOT_FOUND. */
MSBNB_API msbnb_status msbnb_st_writer_write(msbnb_st_writer_t *w, const char *name,
                                             uint64_t offset, const void *data,
                                             uint64_t nbytes);

/* Checks that every tensor received exactly its byte count, fsyncs, and renames the
 * temporary file onto the final path (then fsyncs the directory). After success or
 * failure the handle only accepts msbnb_st_writer_free. */
MSBNB_API msbnb_status msbnb_st_writer_finish(msbnb_st_writer_t *w);

/* Frees the writer; an unfinished temporary file is deleted. Accepts NULL. */
MSBNB_API void msbnb_st_writer_free(msbnb_st_writer_t *w);

/* Total size the file will have (valid after begin; 0 before). */
MSBNB_API uint64_t msbnb_st_writer_file_size(const msbnb_st_writer_t *w);

#ifdef __cplusplus
}
#endif
#endif /* MSBNB_SAFETENSORS_H */
