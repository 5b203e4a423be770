/* The column lane in C: a plan's block of plain chat lines to columns in one call.

   `take(block, first_line_no, tenant, endpoint, max_tokens_limit, max_depth, canon_number)`
   reads a block of lines joined by "\n" and returns, when it takes every line, the tuple
   (custom_ids, id_digests, keys, model_idx, models, material_lens, max_tokens, asks); at the
   first line it does not take it returns None, and the Python lane (intake.column_lane)
   decides the block. It takes only what it fully understands, exactly as the typed lane
   (intake.typed_plain: msgspec structs, then plain_of) reads it: one of the three plain
   shapes, every key known and given once, no key spelled with an escape, sampling values
   that are scalars or arrays of scalars. A number other than a plain integer is made
   canonical by `canon_number(token) -> bytes` (msgspec's own decode and encode), so the key
   material is msgspec's byte for byte. Keys and id digests are BLAKE2b-128 (RFC 7693), as
   `requests.scoped_key` and `records.digest` compute them with hashlib. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* ---- BLAKE2b (RFC 7693, unkeyed) ---------------------------------------------------- */

typedef struct {
    uint8_t b[128];
    uint64_t h[8];
    uint64_t t[2];
    size_t c;
    size_t outlen;
} b2b_ctx;

#define ROTR64(x, y) (((x) >> (y)) ^ ((x) << (64 - (y))))
#define B2B_G(a, b, c, d, x, y)       \
    {                                 \
        v[a] = v[a] + v[b] + x;       \
        v[d] = ROTR64(v[d] ^ v[a], 32); \
        v[c] = v[c] + v[d];           \
        v[b] = ROTR64(v[b] ^ v[c], 24); \
        v[a] = v[a] + v[b] + y;       \
        v[d] = ROTR64(v[d] ^ v[a], 16); \
        v[c] = v[c] + v[d];           \
        v[b] = ROTR64(v[b] ^ v[c], 63); \
    }

static const uint64_t b2b_iv[8] = {
    0x6A09E667F3BCC908ULL, 0xBB67AE8584CAA73BULL, 0x3C6EF372FE94F82BULL,
    0xA54FF53A5F1D36F1ULL, 0x510E527FADE682D1ULL, 0x9B05688C2B3E6C1FULL,
    0x1F83D9ABFB41BD6BULL, 0x5BE0CD19137E2179ULL};

static const uint8_t sigma[12][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3}};

static uint64_t load64(const uint8_t *p) {
    uint64_t x;
    memcpy(&x, p, 8); /* little-endian hosts only: checked at import */
    return x;
}

static void b2b_compress(b2b_ctx *ctx, int last) {
    uint64_t v[16], m[16];
    int i;
    for (i = 0; i < 8; i++) {
        v[i] = ctx->h[i];
        v[i + 8] = b2b_iv[i];
    }
    v[12] ^= ctx->t[0];
    v[13] ^= ctx->t[1];
    if (last) v[14] = ~v[14];
    for (i = 0; i < 16; i++) m[i] = load64(&ctx->b[8 * i]);
    for (i = 0; i < 12; i++) {
        B2B_G(0, 4, 8, 12, m[sigma[i][0]], m[sigma[i][1]]);
        B2B_G(1, 5, 9, 13, m[sigma[i][2]], m[sigma[i][3]]);
        B2B_G(2, 6, 10, 14, m[sigma[i][4]], m[sigma[i][5]]);
        B2B_G(3, 7, 11, 15, m[sigma[i][6]], m[sigma[i][7]]);
        B2B_G(0, 5, 10, 15, m[sigma[i][8]], m[sigma[i][9]]);
        B2B_G(1, 6, 11, 12, m[sigma[i][10]], m[sigma[i][11]]);
        B2B_G(2, 7, 8, 13, m[sigma[i][12]], m[sigma[i][13]]);
        B2B_G(3, 4, 9, 14, m[sigma[i][14]], m[sigma[i][15]]);
    }
    for (i = 0; i < 8; ++i) ctx->h[i] ^= v[i] ^ v[i + 8];
}

static void b2b_init(b2b_ctx *ctx, size_t outlen) {
    int i;
    for (i = 0; i < 8; i++) ctx->h[i] = b2b_iv[i];
    ctx->h[0] ^= 0x01010000 ^ outlen;
    ctx->t[0] = ctx->t[1] = 0;
    ctx->c = 0;
    ctx->outlen = outlen;
    memset(ctx->b, 0, 128);
}

static void b2b_update(b2b_ctx *ctx, const uint8_t *in, size_t inlen) {
    while (inlen > 0) {
        if (ctx->c == 128) { /* a full block, and more input: compress it (not the last) */
            ctx->t[0] += 128;
            if (ctx->t[0] < 128) ctx->t[1]++;
            b2b_compress(ctx, 0);
            ctx->c = 0;
        }
        size_t take = 128 - ctx->c;
        if (take > inlen) take = inlen;
        memcpy(ctx->b + ctx->c, in, take);
        ctx->c += take;
        in += take;
        inlen -= take;
    }
}

static void b2b_final(b2b_ctx *ctx, uint8_t *out) {
    size_t i;
    ctx->t[0] += ctx->c;
    if (ctx->t[0] < ctx->c) ctx->t[1]++;
    while (ctx->c < 128) ctx->b[ctx->c++] = 0;
    b2b_compress(ctx, 1);
    for (i = 0; i < ctx->outlen; i++) out[i] = (uint8_t)((ctx->h[i >> 3] >> (8 * (i & 7))) & 0xFF);
}

/* ---- growable buffers ------------------------------------------------------------------ */

typedef struct {
    char *p;
    size_t n, cap;
} buf;

static int buf_reserve(buf *b, size_t more) {
    if (b->n + more <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->n + more) cap *= 2;
    char *p = PyMem_Realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static int buf_add(buf *b, const void *s, size_t n) {
    if (buf_reserve(b, n) < 0) return -1;
    memcpy(b->p + b->n, s, n);
    b->n += n;
    return 0;
}

static int buf_byte(buf *b, char c) { return buf_add(b, &c, 1); }

/* ---- JSON lexing --------------------------------------------------------------------- */

#define MISS (-1) /* not the lane's line: the Python lane decides */
#define FAIL (-2) /* a Python error is set (memory) */

typedef struct {
    const char *p, *end;
} cur;

static void ws(cur *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static int hex4(const char *s, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char ch = s[i];
        v <<= 4;
        if (ch >= '0' && ch <= '9') v |= (unsigned)(ch - '0');
        else if (ch >= 'a' && ch <= 'f') v |= (unsigned)(ch - 'a' + 10);
        else if (ch >= 'A' && ch <= 'F') v |= (unsigned)(ch - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

/* Length of the valid UTF-8 sequence at s (strict: no overlongs, surrogates or > U+10FFFF),
   or 0. */
static int utf8_len(const unsigned char *s, const unsigned char *end) {
    unsigned char c = s[0];
    if (c < 0xC2) return 0;
    if (c < 0xE0) return (end - s >= 2 && (s[1] & 0xC0) == 0x80) ? 2 : 0;
    if (c < 0xF0) {
        if (end - s < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return 0;
        if (c == 0xE0 && s[1] < 0xA0) return 0;
        if (c == 0xED && s[1] >= 0xA0) return 0;
        return 3;
    }
    if (c < 0xF5) {
        if (end - s < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 ||
            (s[3] & 0xC0) != 0x80)
            return 0;
        if (c == 0xF0 && s[1] < 0x90) return 0;
        if (c == 0xF4 && s[1] >= 0x90) return 0;
        return 4;
    }
    return 0;
}

static int put_utf8(buf *b, unsigned cp) {
    char o[4];
    size_t n;
    if (cp < 0x80) { o[0] = (char)cp; n = 1; }
    else if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); n = 2; }
    else if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F)); n = 3;
    } else {
        o[0] = (char)(0xF0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F)); n = 4;
    }
    return buf_add(b, o, n);
}

/* A JSON string at c->p (its opening quote) decoded into dec (reset first); *escaped tells
   whether it held an escape. */
static int lex_string(cur *c, buf *dec, int *escaped) {
    dec->n = 0;
    *escaped = 0;
    if (c->p >= c->end || *c->p != '"') return MISS;
    const unsigned char *s = (const unsigned char *)c->p + 1, *end = (const unsigned char *)c->end;
    while (1) {
        const unsigned char *run = s;
        while (s < end && *s >= 0x20 && *s != '"' && *s != '\\' && *s < 0x80) s++;
        if (s > run && buf_add(dec, run, (size_t)(s - run)) < 0) return FAIL;
        if (s >= end || *s < 0x20) return MISS;
        if (*s == '"') {
            c->p = (const char *)s + 1;
            return 0;
        }
        if (*s >= 0x80) {
            int n = utf8_len(s, end);
            if (!n) return MISS;
            if (buf_add(dec, s, (size_t)n) < 0) return FAIL;
            s += n;
            continue;
        }
        /* an escape */
        *escaped = 1;
        if (end - s < 2) return MISS;
        char e = (char)s[1], o;
        s += 2;
        switch (e) {
            case '"': o = '"'; break;
            case '\\': o = '\\'; break;
            case '/': o = '/'; break;
            case 'b': o = '\b'; break;
            case 'f': o = '\f'; break;
            case 'n': o = '\n'; break;
            case 'r': o = '\r'; break;
            case 't': o = '\t'; break;
            case 'u': {
                unsigned cp, lo;
                if (end - s < 4 || hex4((const char *)s, &cp) < 0) return MISS;
                s += 4;
                if (cp >= 0xDC00 && cp <= 0xDFFF) return MISS;
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    if (end - s < 6 || s[0] != '\\' || s[1] != 'u' ||
                        hex4((const char *)s + 2, &lo) < 0 || lo < 0xDC00 || lo > 0xDFFF)
                        return MISS;
                    s += 6;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
                if (put_utf8(dec, cp) < 0) return FAIL;
                continue;
            }
            default: return MISS;
        }
        if (buf_byte(dec, o) < 0) return FAIL;
    }
}

static const char hexdigits[] = "0123456789abcdef";

/* A decoded string as msgspec's encoder writes it. */
static int emit_string(buf *out, const char *s, size_t n) {
    if (buf_reserve(out, n + 2) < 0) return FAIL;
    out->p[out->n++] = '"';
    size_t i = 0;
    while (i < n) {
        size_t run = i;
        while (i < n && (unsigned char)s[i] >= 0x20 && s[i] != '"' && s[i] != '\\') i++;
        if (i > run && buf_add(out, s + run, i - run) < 0) return FAIL;
        if (i >= n) break;
        unsigned char ch = (unsigned char)s[i++];
        char esc[6] = {'\\', 0, 0, 0, 0, 0};
        size_t k = 2;
        switch (ch) {
            case '"': esc[1] = '"'; break;
            case '\\': esc[1] = '\\'; break;
            case '\b': esc[1] = 'b'; break;
            case '\f': esc[1] = 'f'; break;
            case '\n': esc[1] = 'n'; break;
            case '\r': esc[1] = 'r'; break;
            case '\t': esc[1] = 't'; break;
            default:
                esc[1] = 'u'; esc[2] = '0'; esc[3] = '0';
                esc[4] = hexdigits[ch >> 4]; esc[5] = hexdigits[ch & 15];
                k = 6;
        }
        if (buf_add(out, esc, k) < 0) return FAIL;
    }
    return buf_byte(out, '"');
}

/* A string lex_string just read, as emit_string writes it: without an escape in the input
   it held no quote, backslash or control byte, so it is written as read. */
static int emit_lexed(buf *out, const buf *dec, int escaped) {
    if (escaped) return emit_string(out, dec->p, dec->n);
    if (buf_reserve(out, dec->n + 2) < 0) return FAIL;
    out->p[out->n++] = '"';
    memcpy(out->p + out->n, dec->p, dec->n);
    out->n += dec->n;
    out->p[out->n++] = '"';
    return 0;
}

/* A JSON number at c->p: *is_int when it is a plain integer (its value in *value when it
   fits in 18 digits, else *big). */
static int lex_number(cur *c, int *is_int, long long *value, int *big) {
    const char *s = c->p, *end = c->end;
    int neg = 0;
    *is_int = 1;
    *big = 0;
    long long v = 0;
    if (s < end && *s == '-') { neg = 1; s++; }
    if (s >= end) return MISS;
    if (*s == '0') s++;
    else if (*s >= '1' && *s <= '9') {
        int digits = 0;
        while (s < end && *s >= '0' && *s <= '9') {
            if (++digits > 18) *big = 1;
            else v = v * 10 + (*s - '0');
            s++;
        }
    } else return MISS;
    if (s < end && *s == '.') {
        *is_int = 0;
        s++;
        if (s >= end || *s < '0' || *s > '9') return MISS;
        while (s < end && *s >= '0' && *s <= '9') s++;
    }
    if (s < end && (*s == 'e' || *s == 'E')) {
        *is_int = 0;
        s++;
        if (s < end && (*s == '+' || *s == '-')) s++;
        if (s >= end || *s < '0' || *s > '9') return MISS;
        while (s < end && *s >= '0' && *s <= '9') s++;
    }
    *value = neg ? -v : v;
    c->p = s;
    return 0;
}

static int literal(cur *c, const char *word, size_t n) {
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n) != 0) return MISS;
    c->p += n;
    return 0;
}

/* ---- one line --------------------------------------------------------------------------- */

/* The body fields of the key material, in the sorted order canonical_json writes them. */
enum {
    F_FREQUENCY_PENALTY, F_MAX_TOKENS, F_MESSAGES, F_MODEL, F_N, F_PRESENCE_PENALTY, F_SEED,
    F_STOP, F_STOP_SEQUENCES, F_TEMPERATURE, F_TOP_K, F_TOP_P, N_BODY,
    /* other keys of a body or a line */
    F_SYSTEM = N_BODY, F_ID, F_PROMPT, F_METADATA, F_DEADLINE, F_CACHE, F_CUSTOM_ID, F_METHOD,
    F_URL, F_BODY, F_PARAMS, N_FIELDS
};

static const char *const field_names[N_FIELDS] = {
    "frequency_penalty", "max_tokens", "messages", "model", "n", "presence_penalty", "seed",
    "stop", "stop_sequences", "temperature", "top_k", "top_p", "system", "id", "prompt",
    "metadata", "deadline", "cache", "custom_id", "method", "url", "body", "params"};

enum { K_LINE_TOP, K_OPENAI, K_ANTHROPIC, K_NATIVE }; /* what an object may be */

typedef struct {
    /* the scratch: canonical values of the body fields, decoded strings */
    buf seg;           /* canonical JSON of each body field's value */
    size_t off[N_BODY], len[N_BODY];
    unsigned seen;     /* bit per field: given */
    buf messages;      /* the messages' canonical items, comma-joined, no brackets */
    buf dec;           /* lex_string's output */
    buf model, custom_id, tenant, system, prompt, msg, keys_seen;
    int has_system, has_prompt, has_id, has_tenant, messages_list;
    long long max_tokens, n_value;
    int n_is_int, seed_set;
    int has_custom_id;
    /* settings */
    long long max_tokens_limit;
    PyObject *canon_number;
    buf material;
} line_state;

static size_t field_lens[N_FIELDS]; /* strlen of each name: set at import */

static int match_key(const char *s, size_t n) {
    for (int f = 0; f < N_FIELDS; f++)
        if (field_lens[f] == n && field_names[f][0] == s[0] && memcmp(field_names[f], s, n) == 0)
            return f;
    return -1;
}

/* A string value into target (decoded; not st->dec); MISS on anything else. */
static int string_into(cur *c, line_state *st, buf *target) {
    int escaped, r = lex_string(c, &st->dec, &escaped);
    if (r < 0) return r;
    target->n = 0;
    return buf_add(target, st->dec.p, st->dec.n) < 0 ? FAIL : 0;
}

/* A scalar or an array of scalars, written canonically to out; int_value and is_int for an
   integer, is_null for null. */
static int sampling_value(cur *c, line_state *st, buf *out, int depth, long long *int_value,
                          int *is_int, int *is_null) {
    int escaped, r, big;
    *is_int = 0;
    *is_null = 0;
    if (c->p >= c->end) return MISS;
    char ch = *c->p;
    if (ch == '"') {
        if ((r = lex_string(c, &st->dec, &escaped)) < 0) return r;
        return emit_lexed(out, &st->dec, escaped);
    }
    if (ch == 't') return literal(c, "true", 4) < 0 ? MISS : buf_add(out, "true", 4);
    if (ch == 'f') return literal(c, "false", 5) < 0 ? MISS : buf_add(out, "false", 5);
    if (ch == 'n') {
        *is_null = 1;
        return literal(c, "null", 4) < 0 ? MISS : buf_add(out, "null", 4);
    }
    if (ch == '[') {
        if (depth > 0) return MISS;
        c->p++;
        if (buf_byte(out, '[') < 0) return FAIL;
        ws(c);
        if (c->p < c->end && *c->p == ']') {
            c->p++;
            return buf_byte(out, ']');
        }
        while (1) {
            long long iv;
            int ii, nn;
            ws(c);
            if ((r = sampling_value(c, st, out, depth + 1, &iv, &ii, &nn)) < 0) return r;
            ws(c);
            if (c->p >= c->end) return MISS;
            if (*c->p == ',') {
                c->p++;
                if (buf_byte(out, ',') < 0) return FAIL;
                continue;
            }
            if (*c->p != ']') return MISS;
            c->p++;
            *is_int = 0;
            return buf_byte(out, ']');
        }
    }
    if (ch == '-' || (ch >= '0' && ch <= '9')) {
        const char *start = c->p;
        long long v;
        if ((r = lex_number(c, is_int, &v, &big)) < 0) return r;
        size_t n = (size_t)(c->p - start);
        if (*is_int && !big && !(n == 2 && start[0] == '-' && start[1] == '0')) {
            *int_value = v;
            return buf_add(out, start, n);
        }
        if (big) return MISS;
        *is_int = 0; /* -0 is an int 0 to msgspec: n and seed checks would differ; miss */
        if (n == 2 && start[0] == '-' && start[1] == '0') return MISS;
        PyObject *tok = PyBytes_FromStringAndSize(start, (Py_ssize_t)n);
        if (!tok) return FAIL;
        PyObject *canon = PyObject_CallOneArg(st->canon_number, tok);
        Py_DECREF(tok);
        if (!canon) {
            if (PyErr_ExceptionMatches(PyExc_MemoryError)) return FAIL;
            PyErr_Clear();
            return MISS;
        }
        if (!PyBytes_Check(canon)) {
            Py_DECREF(canon);
            return MISS;
        }
        r = buf_add(out, PyBytes_AS_STRING(canon), (size_t)PyBytes_GET_SIZE(canon));
        Py_DECREF(canon);
        return r < 0 ? FAIL : 0;
    }
    return MISS;
}

/* An object's keys one by one: the next key's field in *field, 0 when done; keys given
   twice, unknown keys or keys with an escape are a miss. */
/* The next key of an object whose brace was read: 1 with the key in st->dec and the
   cursor at its value, 0 past the closing brace; a key with an escape is a miss. */
static int object_key(cur *c, line_state *st, int *first) {
    int escaped, r;
    ws(c);
    if (c->p >= c->end) return MISS;
    if (*c->p == '}') {
        c->p++;
        return 0;
    }
    if (!*first) {
        if (*c->p != ',') return MISS;
        c->p++;
        ws(c);
    }
    *first = 0;
    if ((r = lex_string(c, &st->dec, &escaped)) < 0) return r;
    if (escaped) return MISS;
    ws(c);
    if (c->p >= c->end || *c->p != ':') return MISS;
    c->p++;
    ws(c);
    return 1;
}

/* object_key of a line or a body: the key's field in *field; a key unknown or given twice
   is a miss. */
static int next_key(cur *c, line_state *st, int *field, unsigned *given, int *first) {
    int r = object_key(c, st, first);
    if (r != 1) return r;
    int f = match_key(st->dec.p, st->dec.n);
    if (f < 0 || (*given & (1u << f))) return MISS;
    *given |= 1u << f;
    *field = f;
    return 1;
}

static int open_object(cur *c) {
    ws(c);
    if (c->p >= c->end || *c->p != '{') return MISS;
    c->p++;
    return 0;
}

/* One message {"role": str, "content": str}, appended canonically to st->messages. */
static int message(cur *c, line_state *st) {
    int r, escaped;
    if (open_object(c) < 0) return MISS;
    int got_role = 0, got_content = 0, first = 1;
    size_t role_at = 0, role_len = 0, content_at = 0, content_len = 0;
    buf *tmp = &st->msg; /* content and role, canonical: then written in sorted order */
    tmp->n = 0;
    while ((r = object_key(c, st, &first)) == 1) {
        int is_role = st->dec.n == 4 && memcmp(st->dec.p, "role", 4) == 0;
        int is_content = st->dec.n == 7 && memcmp(st->dec.p, "content", 7) == 0;
        if ((!is_role && !is_content) || (is_role && got_role) || (is_content && got_content))
            return MISS;
        if ((r = lex_string(c, &st->dec, &escaped)) < 0) return r;
        size_t at = tmp->n;
        if (emit_lexed(tmp, &st->dec, escaped) < 0) return FAIL;
        if (is_role) { got_role = 1; role_at = at; role_len = tmp->n - at; }
        else { got_content = 1; content_at = at; content_len = tmp->n - at; }
    }
    if (r < 0) return r;
    if (!got_role || !got_content) return MISS;
    buf *m = &st->messages;
    if (buf_add(m, "{\"content\":", 11) < 0 || buf_add(m, tmp->p + content_at, content_len) < 0 ||
        buf_add(m, ",\"role\":", 8) < 0 || buf_add(m, tmp->p + role_at, role_len) < 0 ||
        buf_byte(m, '}') < 0)
        return FAIL;
    return 0;
}

/* A messages value: a non-empty list of messages; null when the line is native. */
static int messages_value(cur *c, line_state *st, int kind) {
    int r;
    if (c->p < c->end && *c->p == 'n' && kind == K_NATIVE)
        return literal(c, "null", 4);
    if (c->p >= c->end || *c->p != '[') return MISS;
    c->p++;
    st->messages.n = 0;
    int count = 0;
    while (1) {
        ws(c);
        if (c->p >= c->end) return MISS;
        if (*c->p == ']') {
            if (count) return MISS; /* "[x,]" */
            return MISS;            /* an empty list */
        }
        if (count && buf_byte(&st->messages, ',') < 0) return FAIL;
        if ((r = message(c, st)) < 0) return r;
        count++;
        ws(c);
        if (c->p >= c->end) return MISS;
        if (*c->p == ',') { c->p++; continue; }
        if (*c->p != ']') return MISS;
        c->p++;
        st->messages_list = 1;
        return 0;
    }
}

/* A native line's metadata: null, or {"tenant": non-empty str, "tags": {str: str} | null}. */
static int metadata_value(cur *c, line_state *st) {
    int r, f, escaped;
    unsigned given = 0;
    if (c->p < c->end && *c->p == 'n') return literal(c, "null", 4);
    if (open_object(c) < 0) return MISS;
    int first = 1;
    while ((r = object_key(c, st, &first)) == 1) {
        if (st->dec.n == 6 && memcmp(st->dec.p, "tenant", 6) == 0) f = 0;
        else if (st->dec.n == 4 && memcmp(st->dec.p, "tags", 4) == 0) f = 1;
        else return MISS;
        if (given & (1u << f)) return MISS;
        given |= 1u << f;
        if (f == 0) {
            if ((r = string_into(c, st, &st->tenant)) < 0) return r;
            if (st->tenant.n == 0) return MISS;
            st->has_tenant = 1;
            continue;
        }
        if (c->p < c->end && *c->p == 'n') {
            if (literal(c, "null", 4) < 0) return MISS;
            continue;
        }
        /* tags: string keys (none twice, none escaped) to string values */
        if (open_object(c) < 0) return MISS;
        buf *seen_keys = &st->keys_seen; /* each key as its length (4 bytes) and bytes */
        seen_keys->n = 0;
        int tfirst = 1;
        while ((r = object_key(c, st, &tfirst)) == 1) {
            /* a key given twice: msgspec keeps the last; the lane leaves the line */
            for (size_t i = 0; i < seen_keys->n;) {
                uint32_t klen;
                memcpy(&klen, seen_keys->p + i, 4);
                if (klen == st->dec.n && memcmp(seen_keys->p + i + 4, st->dec.p, klen) == 0)
                    return MISS;
                i += 4 + klen;
            }
            uint32_t klen = (uint32_t)st->dec.n;
            if (buf_add(seen_keys, &klen, 4) < 0 || buf_add(seen_keys, st->dec.p, klen) < 0)
                return FAIL;
            if ((r = lex_string(c, &st->dec, &escaped)) < 0) return r;
        }
        if (r < 0) return r;
    }
    return r;
}

/* A body (kind K_OPENAI or K_ANTHROPIC: the object at c->p) or a native line's top level
   (K_NATIVE: its first key already read into *field). */
static int body_field(cur *c, line_state *st, int kind, int f) {
    int r, is_int, is_null, escaped;
    long long iv;
    if (f < N_BODY && f != F_MESSAGES && f != F_MODEL && f != F_MAX_TOKENS) {
        st->off[f] = st->seg.n;
        if ((r = sampling_value(c, st, &st->seg, 0, &iv, &is_int, &is_null)) < 0) return r;
        st->len[f] = st->seg.n - st->off[f];
        if (f == F_N) { st->n_is_int = is_int; st->n_value = iv; }
        if (f == F_SEED) st->seed_set = !is_null;
        return 0;
    }
    switch (f) {
        case F_MODEL:
            if ((r = string_into(c, st, &st->model)) < 0) return r;
            if (st->model.n == 0) return MISS;
            st->off[f] = st->seg.n;
            if (emit_string(&st->seg, st->model.p, st->model.n) < 0) return FAIL;
            st->len[f] = st->seg.n - st->off[f];
            return 0;
        case F_MAX_TOKENS: {
            int big;
            const char *start = c->p;
            if (c->p >= c->end || !(*c->p == '-' || (*c->p >= '0' && *c->p <= '9'))) return MISS;
            if ((r = lex_number(c, &is_int, &iv, &big)) < 0) return r;
            if (!is_int || big || iv <= 0 || iv > st->max_tokens_limit) return MISS;
            st->max_tokens = iv;
            st->off[f] = st->seg.n;
            if (buf_add(&st->seg, start, (size_t)(c->p - start)) < 0) return FAIL;
            st->len[f] = st->seg.n - st->off[f];
            return 0;
        }
        case F_MESSAGES:
            return messages_value(c, st, kind);
    }
    if (kind == K_OPENAI) return MISS;
    if (f == F_SYSTEM) {
        if (c->p < c->end && *c->p == 'n') return literal(c, "null", 4);
        if ((r = string_into(c, st, &st->system)) < 0) return r;
        st->has_system = 1;
        return 0;
    }
    if (kind == K_ANTHROPIC) return MISS;
    switch (f) {
        case F_ID:
            if (c->p < c->end && *c->p == 'n') return literal(c, "null", 4);
            if ((r = string_into(c, st, &st->custom_id)) < 0) return r;
            if (st->custom_id.n == 0) return MISS;
            st->has_id = 1;
            return 0;
        case F_PROMPT:
            if (c->p < c->end && *c->p == 'n') return literal(c, "null", 4);
            if ((r = lex_string(c, &st->dec, &escaped)) < 0) return r;
            st->has_prompt = 1;
            /* kept in messages' form: [{"content": prompt, "role": "user"}] when needed */
            st->prompt.n = 0;
            if (buf_add(&st->prompt, "{\"content\":", 11) < 0 ||
                emit_lexed(&st->prompt, &st->dec, escaped) < 0 ||
                buf_add(&st->prompt, ",\"role\":\"user\"}", 15) < 0)
                return FAIL;
            return 0;
        case F_METADATA:
            return metadata_value(c, st);
        case F_CACHE: {
            /* any scalar but false (false: the dict path) */
            buf scratch = {0};
            if (c->p < c->end && *c->p == 'f') return MISS;
            if (c->p < c->end && *c->p == '[') return MISS;
            r = sampling_value(c, st, &scratch, 0, &iv, &is_int, &is_null);
            PyMem_Free(scratch.p);
            return r;
        }
    }
    return MISS; /* a deadline (the dict path) or a line-level key */
}

static int body_object(cur *c, line_state *st, int kind) {
    int r, f;
    if (open_object(c) < 0) return MISS;
    unsigned given = 0;
    int first = 1;
    while ((r = next_key(c, st, &f, &given, &first)) == 1) {
        if ((r = body_field(c, st, kind, f)) < 0) return r;
    }
    if (r < 0) return r;
    st->seen = given;
    return 0;
}

/* The key material: the body's fields in sorted order, the system prompt first among the
   messages (a native line's prompt as its one user message). */
static int material(line_state *st) {
    buf *m = &st->material;
    m->n = 0;
    if (buf_byte(m, '{') < 0) return FAIL;
    int first = 1;
    for (int f = 0; f < N_BODY; f++) {
        if (!(st->seen & (1u << f))) continue;
        if (f == F_MESSAGES && !st->messages_list) continue;
        if (!first && buf_byte(m, ',') < 0) return FAIL;
        first = 0;
        if (buf_byte(m, '"') < 0 || buf_add(m, field_names[f], strlen(field_names[f])) < 0 ||
            buf_add(m, "\":", 2) < 0)
            return FAIL;
        if (f == F_MESSAGES) {
            if (buf_byte(m, '[') < 0) return FAIL;
            if (st->has_system) {
                if (buf_add(m, "{\"content\":", 11) < 0 ||
                    emit_string(m, st->system.p, st->system.n) < 0 ||
                    buf_add(m, ",\"role\":\"system\"},", 18) < 0)
                    return FAIL;
            }
            if (buf_add(m, st->messages.p, st->messages.n) < 0 || buf_byte(m, ']') < 0)
                return FAIL;
        } else if (buf_add(m, st->seg.p + st->off[f], st->len[f]) < 0)
            return FAIL;
    }
    return buf_byte(m, '}');
}

#define LONG_RUN 19 /* digits in a row that intake.screen.no_long_digits refuses */

static int is_digit(char ch) { return (unsigned)(ch - '0') < 10u; }

/* parse_block's screens, on the raw line: no byte-order mark and no run of 19 digits
   anywhere (intake.screen). Such a run covers one index of every LONG_RUN, so only those
   are looked at, and a digit there measured. */
static int screened(const char *s, size_t n) {
    for (const char *p = s; (p = memchr(p, 0xEF, (size_t)(s + n - p))) != NULL; p++)
        if (s + n - p >= 3 && (unsigned char)p[1] == 0xBB && (unsigned char)p[2] == 0xBF)
            return 0;
    for (size_t k = LONG_RUN - 1; k < n; k += LONG_RUN) {
        if (!is_digit(s[k])) continue;
        size_t lo = k, hi = k + 1;
        while (lo > 0 && is_digit(s[lo - 1])) lo--;
        while (hi < n && is_digit(s[hi])) hi++;
        if (hi - lo >= LONG_RUN) return 0;
    }
    return 1;
}

/* One line: 0 when taken (st holds custom_id, tenant, model, material ...), else MISS/FAIL. */
static int take_line(const char *s, size_t n, line_state *st, int max_depth) {
    int depth = 0, r, f, escaped;
    if (n == 0 || !screened(s, n)) return MISS;
    for (size_t i = 0; i < n; i++) depth += (s[i] == '[') + (s[i] == '{');
    if (depth > max_depth) return MISS;
    cur c = {s, s + n};
    st->seg.n = st->messages.n = 0;
    st->seen = 0;
    st->has_system = st->has_prompt = st->has_id = st->has_tenant = st->messages_list = 0;
    st->max_tokens = 0;
    st->n_is_int = st->seed_set = 0;
    st->n_value = 0;
    st->has_custom_id = 0;
    if (open_object(&c) < 0) return MISS;
    unsigned given = 0;
    int first = 1, kind = -1;
    while ((r = next_key(&c, st, &f, &given, &first)) == 1) {
        switch (f) {
            case F_CUSTOM_ID:
                if ((r = string_into(&c, st, &st->custom_id)) < 0) return r;
                if (st->custom_id.n == 0) return MISS;
                st->has_custom_id = 1;
                break;
            case F_METHOD:
                if ((r = lex_string(&c, &st->dec, &escaped)) < 0) return r;
                if (!(st->dec.n == 4 && memcmp(st->dec.p, "POST", 4) == 0)) return MISS;
                break;
            case F_URL:
                if ((r = lex_string(&c, &st->dec, &escaped)) < 0) return r;
                if (!(st->dec.n == 20 && memcmp(st->dec.p, "/v1/chat/completions", 20) == 0))
                    return MISS;
                break;
            case F_BODY:
            case F_PARAMS:
                if (kind != -1) return MISS;
                kind = f == F_BODY ? K_OPENAI : K_ANTHROPIC;
                if ((r = body_object(&c, st, kind)) < 0) return r;
                break;
            default:
                if (kind == K_OPENAI || kind == K_ANTHROPIC) return MISS;
                kind = K_NATIVE;
                if ((r = body_field(&c, st, K_NATIVE, f)) < 0) return r;
                st->seen |= 1u << f;
        }
    }
    if (r < 0) return r;
    ws(&c);
    if (c.p != c.end) return MISS;
    const unsigned top = 1u << F_CUSTOM_ID | 1u << F_METHOD | 1u << F_URL | 1u << F_BODY;
    const unsigned need_body = 1u << F_MODEL | 1u << F_MESSAGES;
    if (kind == K_OPENAI) {
        if (given != top || (st->seen & need_body) != need_body) return MISS;
    } else if (kind == K_ANTHROPIC) {
        if (given != (1u << F_CUSTOM_ID | 1u << F_PARAMS)) return MISS;
        if ((st->seen & (need_body | 1u << F_MAX_TOKENS)) != (need_body | 1u << F_MAX_TOKENS))
            return MISS;
    } else if (kind == K_NATIVE) {
        if (!(given & (1u << F_MODEL))) return MISS;
        if (given & (1u << F_CUSTOM_ID | 1u << F_METHOD | 1u << F_URL)) return MISS;
        if (!st->messages_list) {
            if (!st->has_prompt) return MISS;
            st->messages.n = 0;
            if (buf_add(&st->messages, st->prompt.p, st->prompt.n) < 0) return FAIL;
            st->messages_list = 1;
            st->seen |= 1u << F_MESSAGES;
        }
    } else
        return MISS;
    return material(st);
}

/* ---- a block ------------------------------------------------------------------------- */

static void digest16(const char *a, size_t an, const char *b, size_t bn, const char *c,
                     size_t cn, uint8_t *out) {
    b2b_ctx h;
    b2b_init(&h, 16);
    b2b_update(&h, (const uint8_t *)a, an);
    if (bn) b2b_update(&h, (const uint8_t *)b, bn);
    if (cn) b2b_update(&h, (const uint8_t *)c, cn);
    b2b_final(&h, out);
}

static void free_state(line_state *st) {
    buf *all[] = {&st->seg, &st->messages, &st->dec, &st->model, &st->custom_id, &st->tenant,
                  &st->system, &st->prompt, &st->msg, &st->keys_seen, &st->material};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) PyMem_Free(all[i]->p);
}

#define MAX_MODELS 256

static PyObject *take(PyObject *self, PyObject *args) {
    Py_buffer block;
    long long first_line_no, max_tokens_limit;
    const char *tenant, *endpoint;
    Py_ssize_t tenant_n, endpoint_n;
    int max_depth;
    PyObject *canon_number;
    if (!PyArg_ParseTuple(args, "y*Ls#s#LiO", &block, &first_line_no, &tenant, &tenant_n,
                          &endpoint, &endpoint_n, &max_tokens_limit, &max_depth, &canon_number))
        return NULL;
    line_state st;
    memset(&st, 0, sizeof st);
    st.max_tokens_limit = max_tokens_limit;
    st.canon_number = canon_number;
    buf digests = {0}, keys = {0}, model_idx = {0}, lens = {0}, maxes = {0},
        asks = {0}, scope = {0};
    PyObject *custom_ids = PyList_New(0), *models = PyList_New(0), *result = NULL;
    char *model_names[MAX_MODELS];
    size_t model_lens[MAX_MODELS];
    int n_models = 0;
    if (!custom_ids || !models) goto done;
    const char *s = block.buf, *end = s + block.len;
    long long line_no = first_line_no;
    while (1) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        const char *line_end = nl ? nl : end;
        int r = take_line(s, (size_t)(line_end - s), &st, max_depth);
        if (r == FAIL) goto done;
        if (r == MISS) {
            Py_INCREF(Py_None);
            result = Py_None;
            goto done;
        }
        /* the custom_id: a native line's id, else line-<n> */
        if (!st.has_custom_id && !st.has_id) {
            char tmp[32];
            int k = snprintf(tmp, sizeof tmp, "line-%lld", line_no);
            st.custom_id.n = 0;
            if (buf_add(&st.custom_id, tmp, (size_t)k) < 0) goto done;
        }
        PyObject *id = PyUnicode_DecodeUTF8(st.custom_id.p, (Py_ssize_t)st.custom_id.n, NULL);
        if (!id) goto done;
        int bad = PyList_Append(custom_ids, id);
        Py_DECREF(id);
        if (bad) goto done;
        uint8_t d[16];
        digest16(st.custom_id.p, st.custom_id.n, NULL, 0, NULL, 0, d);
        if (buf_add(&digests, d, 16) < 0) goto done;
        /* the key: tenant \0 endpoint \0 material */
        const char *t = st.has_tenant ? st.tenant.p : tenant;
        size_t tn = st.has_tenant ? st.tenant.n : (size_t)tenant_n;
        scope.n = 0;
        if (buf_add(&scope, t, tn) < 0 || buf_byte(&scope, 0) < 0 ||
            buf_add(&scope, endpoint, (size_t)endpoint_n) < 0 || buf_byte(&scope, 0) < 0)
            goto done;
        digest16(scope.p, scope.n, st.material.p, st.material.n, NULL, 0, d);
        if (buf_add(&keys, d, 16) < 0) goto done;
        /* the model's number in this block */
        int m = 0;
        while (m < n_models &&
               !(model_lens[m] == st.model.n && memcmp(model_names[m], st.model.p, st.model.n) == 0))
            m++;
        if (m == n_models) {
            if (n_models == MAX_MODELS) {
                Py_INCREF(Py_None);
                result = Py_None;
                goto done;
            }
            PyObject *name = PyUnicode_DecodeUTF8(st.model.p, (Py_ssize_t)st.model.n, NULL);
            if (!name) goto done;
            bad = PyList_Append(models, name);
            Py_DECREF(name);
            if (bad) goto done;
            /* the list holds the str; its UTF-8 stays alive with it */
            Py_ssize_t un;
            const char *u = PyUnicode_AsUTF8AndSize(PyList_GET_ITEM(models, m), &un);
            if (!u) goto done;
            model_names[m] = (char *)u;
            model_lens[m] = (size_t)un;
            n_models++;
        }
        uint32_t m32 = (uint32_t)m;
        int64_t len64 = (int64_t)st.material.n, max64 = st.max_tokens;
        uint8_t a = (uint8_t)((st.n_is_int && st.n_value > 1) | (st.seed_set << 1));
        if (buf_add(&model_idx, &m32, 4) < 0 || buf_add(&lens, &len64, 8) < 0 ||
            buf_add(&maxes, &max64, 8) < 0 || buf_byte(&asks, (char)a) < 0)
            goto done;
        line_no++;
        if (!nl) break;
        s = nl + 1;
    }
    result = Py_BuildValue("(Oy#y#y#Oy#y#y#)", custom_ids, digests.p, (Py_ssize_t)digests.n,
                           keys.p, (Py_ssize_t)keys.n, model_idx.p, (Py_ssize_t)model_idx.n,
                           models, lens.p, (Py_ssize_t)lens.n, maxes.p, (Py_ssize_t)maxes.n,
                           asks.p, (Py_ssize_t)asks.n);
done:
    PyBuffer_Release(&block);
    free_state(&st);
    PyMem_Free(digests.p);
    PyMem_Free(keys.p);
    PyMem_Free(model_idx.p);
    PyMem_Free(lens.p);
    PyMem_Free(maxes.p);
    PyMem_Free(asks.p);
    PyMem_Free(scope.p);
    Py_XDECREF(custom_ids);
    Py_XDECREF(models);
    if (!result && !PyErr_Occurred()) PyErr_NoMemory();
    return result;
}

/* count_newlines(buffer[, length]): the b"\n" in the buffer's first `length` bytes (all of
   it by default), with memchr; what a block of lines costs the reader that numbers them. */
static PyObject *count_newlines(PyObject *self, PyObject *args) {
    PyObject *obj;
    Py_ssize_t length = -1;
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "O|n", &obj, &length)) return NULL;
    if (PyObject_GetBuffer(obj, &data, PyBUF_SIMPLE) < 0) return NULL;
    if (length < 0 || length > data.len) length = data.len;
    const char *s = data.buf, *end = s + length;
    Py_ssize_t n = 0;
    Py_BEGIN_ALLOW_THREADS
    while (s < end && (s = memchr(s, '\n', (size_t)(end - s))) != NULL) {
        n++;
        s++;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    return PyLong_FromSsize_t(n);
}

/* blake2b_16(data): for the tests, against hashlib. */
static PyObject *blake2b_16(PyObject *self, PyObject *arg) {
    Py_buffer data;
    uint8_t d[16];
    if (PyObject_GetBuffer(arg, &data, PyBUF_SIMPLE) < 0) return NULL;
    digest16(data.buf, (size_t)data.len, NULL, 0, NULL, 0, d);
    PyBuffer_Release(&data);
    return PyBytes_FromStringAndSize((const char *)d, 16);
}

static PyMethodDef methods[] = {
    {"take", take, METH_VARARGS, "A block of plain chat lines as columns, or None."},
    {"blake2b_16", blake2b_16, METH_O, "BLAKE2b-128 of bytes."},
    {"count_newlines", count_newlines, METH_VARARGS, "The newlines in a buffer's first bytes."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_lane", NULL, -1, methods};

PyMODINIT_FUNC PyInit__lane(void) {
    uint16_t one = 1;
    if (*(uint8_t *)&one != 1) {
        PyErr_SetString(PyExc_ImportError, "batchd's C lane needs a little-endian host");
        return NULL;
    }
    for (int f = 0; f < N_FIELDS; f++) field_lens[f] = strlen(field_names[f]);
    return PyModule_Create(&module);
}
