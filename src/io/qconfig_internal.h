/* Internal glue between qconfig.c, hfjson.c and convert.c. */
#ifndef MSBNB_QCONFIG_INTERNAL_H
#define MSBNB_QCONFIG_INTERNAL_H

#include "io_internal.h"
#include "msbnb/qconfig.h"

/* 1 if tensor_name is `<module>.weight`, 2-D, float, and module is no embedding/norm;
 * writes module (cap bytes). */
int msbnb__linear_candidate(const char *tensor_name, msbnb_dtype dtype, int ndim, char *module,
                            size_t cap);
/* Whether c uses a bitsandbytes layout (NF4, FP4, symmetric per-row INT8). */
int msbnb__qconfig_is_bnb(const msbnb_qconfig *c);
/* Appends the quantization_config object for c (plus extra skip names) to b. */
msbnb_status msbnb__qconfig_json(const msbnb_qconfig *c, const char *const *extra_skip,
                                 int n_extra, msbnb__sbuf *b);
/* Rewrites a config.json the way transformers' save_pretrained writes it (json.dumps with
 * indent=2, trailing newline; number and string literals kept verbatim), with the top-level
 * "quantization_config" removed and, when qblock != NULL, replaced by the JSON object
 * qblock inserted in sorted key position. */
msbnb_status msbnb__hf_config_rewrite(const char *text, size_t len, const char *qblock,
                                      msbnb__sbuf *out);
#endif
