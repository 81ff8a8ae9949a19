/* config.json rewriting that keeps transformers' byte layout: save_pretrained writes
 * json.dumps(config, indent=2, sort_keys=True) + "\n". We re-emit the parsed document in
 * that style, copying every string and number literal verbatim (cJSON would lose "6.0" vs
 * "6"), and splice the quantization_config object in at its sorted position. */
#include "internal.h"
#include "qconfig_internal.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

typedef struct jnode {
    int kind; /* 'o' object, 'a' array, 's' scalar literal */
    const char *raw;
    size_t rawlen;
    const char *key; /* member key literal including quotes (objects' children) */
    size_t keylen;
    struct jnode *child, *next;
} jnode;

typedef struct {
    const char *s, *end;
    int depth, err;
} jparser;

static void skip_ws(jparser *p) {
    while (p->s < p->end && (*p->s == ' ' || *p->s == '\t' || *p->s == '\n' || *p->s == '\r')) p->s++;
}

static void free_node(jnode *n) {
    while (n) {
        jnode *nx = n->next;
        free_node(n->child);
        free(n);
        n = nx;
    }
}

static int scan_string(jparser *p) {
    if (p->s >= p->end || *p->s != '"') return 0;
    p->s++;
    while (p->s < p->end && *p->s != '"') {
        if (*p->s == '\\') p->s++;
        p->s++;
    }
    if (p->s >= p->end) return 0;
    p->s++;
    return 1;
}

static jnode *parse_value(jparser *p) {
    skip_ws(p);
    if (p->s >= p->end || ++p->depth > 200) {
        p->err = 1;
        return NULL;
    }
    jnode *n = calloc(1, sizeof *n);
    if (!n) {
        p->err = 1;
        return NULL;
    }
    char c = *p->s;
    if (c == '{' || c == '[') {
        n->kind = c == '{' ? 'o' : 'a';
        char close = c == '{' ? '}' : ']';
        p->s++;
        skip_ws(p);
        jnode **tail = &n->child;
        if (p->s < p->end && *p->s == close) {
            p->s++;
        } else {
            for (;;) {
                const char *k = NULL;
                size_t kl = 0;
                if (n->kind == 'o') {
                    skip_ws(p);
                    k = p->s;
                    if (!scan_string(p)) { p->err = 1; break; }
                    kl = (size_t)(p->s - k);
                    skip_ws(p);
                    if (p->s >= p->end || *p->s != ':') { p->err = 1; break; }
                    p->s++;
                }
                jnode *v = parse_value(p);
                if (!v) break;
                v->key = k;
                v->keylen = kl;
                *tail = v;
                tail = &v->next;
                skip_ws(p);
                if (p->s < p->end && *p->s == ',') { p->s++; continue; }
                if (p->s < p->end && *p->s == close) { p->s++; break; }
                p->err = 1;
                break;
            }
        }
    } else {
        n->kind = 's';
        n->raw = p->s;
        if (c == '"') {
            if (!scan_string(p)) p->err = 1;
        } else {
            while (p->s < p->end && !strchr(" \t\r\n,]}:", *p->s)) p->s++;
        }
        n->rawlen = (size_t)(p->s - n->raw);
        if (n->rawlen == 0) p->err = 1;
    }
    p->depth--;
    if (p->err) {
        free_node(n);
        return NULL;
    }
    return n;
}

static void indent(msbnb__sbuf *b, int level) {
    for (int i = 0; i < level; i++) msbnb__sb_put(b, "  ", 2);
}

static void emit(msbnb__sbuf *b, const jnode *n, int level) {
    if (n->kind == 's') {
        msbnb__sb_put(b, n->raw, n->rawlen);
        return;
    }
    char open = n->kind == 'o' ? '{' : '[', close = n->kind == 'o' ? '}' : ']';
    msbnb__sb_put(b, &open, 1);
    if (!n->child) {
        msbnb__sb_put(b, &close, 1);
        return;
    }
    for (const jnode *c = n->child; c; c = c->next) {
        msbnb__sb_puts(b, c == n->child ? "\n" : ",\n");
        indent(b, level + 1);
        if (n->kind == 'o') {
            msbnb__sb_put(b, c->key, c->keylen);
            msbnb__sb_puts(b, ": ");
        }
        emit(b, c, level + 1);
    }
    msbnb__sb_puts(b, "\n");
    indent(b, level);
    msbnb__sb_put(b, &close, 1);
}

static int key_is(const jnode *n, const char *lit) {
    size_t l = strlen(lit);
    return n->keylen == l && memcmp(n->key, lit, l) == 0;
}

/* Compares two key literals by their raw bytes (equal to Python's sort for ASCII keys). */
static int key_cmp(const jnode *a, const char *lit) {
    size_t l = strlen(lit), m = a->keylen < l ? a->keylen : l;
    int c = memcmp(a->key, lit, m);
    if (c) return c;
    return a->keylen < l ? -1 : a->keylen > l;
}

msbnb_status msbnb__hf_config_rewrite(const char *text, size_t len, const char *qblock,
                                      msbnb__sbuf *out) {
    cJSON *check = cJSON_ParseWithLength(text, len);
    int ok = cJSON_IsObject(check);
    cJSON_Delete(check);
    if (!ok) return msbnb__fail(MSBNB_ERR_FORMAT, "config.json: not a valid JSON object");
    jparser p = {text, text + len, 0, 0};
    jnode *root = parse_value(&p);
    if (!root || root->kind != 'o') {
        free_node(root);
        return msbnb__fail(MSBNB_ERR_FORMAT, "config.json: cannot parse");
    }
    jnode **pp = &root->child;
    while (*pp) {
        if (key_is(*pp, "\"quantization_config\"")) {
            jnode *d = *pp;
            *pp = d->next;
            d->next = NULL;
            free_node(d);
        } else {
            pp = &(*pp)->next;
        }
    }
    jnode *q = NULL;
    if (qblock) {
        jparser qp = {qblock, qblock + strlen(qblock), 0, 0};
        q = parse_value(&qp);
        if (!q || q->kind != 'o') {
            free_node(q);
            free_node(root);
            return msbnb__fail(MSBNB_ERR_INTERNAL, "quantization_config block does not parse");
        }
        q->key = "\"quantization_config\"";
        q->keylen = strlen(q->key);
        pp = &root->child;
        while (*pp && key_cmp(*pp, q->key) < 0) pp = &(*pp)->next;
        q->next = *pp;
        *pp = q;
    }
    emit(out, root, 0);
    msbnb__sb_puts(out, "\n");
    free_node(root);
    if (out->err) return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
    return MSBNB_OK;
}
