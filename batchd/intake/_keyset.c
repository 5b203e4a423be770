/* KeySet: a set of 16-byte digests (request keys, id digests) for in-run dedup, in C.

   The same answers as intake.seen.SeenSet: `check_add_packed(packed)` tells, for each
   16-byte value laid end to end, whether it was seen before (in an earlier call, or earlier
   in this one) and adds it; `contains(hi, lo)` looks pairs up (the two little-endian
   uint64 halves, as SeenSet takes them) without adding. The digests are BLAKE2b output,
   uniform already: a slot is found from the first 8 bytes by open addressing (linear probe),
   the table doubled past 70% full. 16 bytes a slot; the all-zero value is kept apart, as an
   empty slot is all zeros. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    uint64_t *slots; /* 2 words a slot */
    size_t cap;      /* slots, a power of two */
    size_t n;        /* values held, the zero one included */
    int has_zero;
} KeySet;

static int grow(KeySet *s) {
    size_t cap = s->cap ? s->cap * 2 : 1024;
    uint64_t *slots = PyMem_Calloc(cap, 16);
    if (!slots) {
        PyErr_NoMemory();
        return -1;
    }
    size_t mask = cap - 1;
    for (size_t i = 0; i < s->cap; i++) {
        uint64_t a = s->slots[2 * i], b = s->slots[2 * i + 1];
        if (!(a | b)) continue;
        size_t j = a & mask;
        while (slots[2 * j] | slots[2 * j + 1]) j = (j + 1) & mask;
        slots[2 * j] = a;
        slots[2 * j + 1] = b;
    }
    PyMem_Free(s->slots);
    s->slots = slots;
    s->cap = cap;
    return 0;
}

/* 1: held already; 0: not (added when add); -1: out of memory. */
static int check(KeySet *s, uint64_t a, uint64_t b, int add) {
    if (!(a | b)) {
        int had = s->has_zero;
        if (add && !had) {
            s->has_zero = 1;
            s->n++;
        }
        return had;
    }
    if (add && (s->n + 1) * 10 > s->cap * 7 && grow(s) < 0) return -1;
    if (!s->cap) return 0;
    size_t mask = s->cap - 1, j = a & mask;
    while (s->slots[2 * j] | s->slots[2 * j + 1]) {
        if (s->slots[2 * j] == a && s->slots[2 * j + 1] == b) return 1;
        j = (j + 1) & mask;
    }
    if (add) {
        s->slots[2 * j] = a;
        s->slots[2 * j + 1] = b;
        s->n++;
    }
    return 0;
}

static PyObject *check_add_packed(KeySet *s, PyObject *arg) {
    Py_buffer in;
    if (PyObject_GetBuffer(arg, &in, PyBUF_SIMPLE) < 0) return NULL;
    if (in.len % 16) {
        PyBuffer_Release(&in);
        PyErr_SetString(PyExc_ValueError, "packed values must be 16 bytes each");
        return NULL;
    }
    Py_ssize_t n = in.len / 16;
    PyObject *out = PyBytes_FromStringAndSize(NULL, n);
    if (!out) {
        PyBuffer_Release(&in);
        return NULL;
    }
    char *flags = PyBytes_AS_STRING(out);
    const char *p = in.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t a, b;
        memcpy(&a, p + 16 * i, 8);
        memcpy(&b, p + 16 * i + 8, 8);
        int r = check(s, a, b, 1);
        if (r < 0) {
            PyBuffer_Release(&in);
            Py_DECREF(out);
            return NULL;
        }
        flags[i] = (char)r;
    }
    PyBuffer_Release(&in);
    return out;
}

static PyObject *contains(KeySet *s, PyObject *args) {
    Py_buffer hi, lo;
    if (!PyArg_ParseTuple(args, "y*y*", &hi, &lo)) return NULL;
    PyObject *out = NULL;
    if (hi.len != lo.len || hi.len % 8) {
        PyErr_SetString(PyExc_ValueError, "hi and lo must be uint64 arrays of one length");
        goto done;
    }
    Py_ssize_t n = hi.len / 8;
    out = PyBytes_FromStringAndSize(NULL, n);
    if (!out) goto done;
    char *flags = PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t a, b;
        memcpy(&a, (const char *)hi.buf + 8 * i, 8);
        memcpy(&b, (const char *)lo.buf + 8 * i, 8);
        flags[i] = (char)check(s, a, b, 0);
    }
done:
    PyBuffer_Release(&hi);
    PyBuffer_Release(&lo);
    return out;
}

static Py_ssize_t keyset_len(KeySet *s) { return (Py_ssize_t)s->n; }

static void keyset_dealloc(KeySet *s) {
    PyMem_Free(s->slots);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static PyObject *nbytes(KeySet *s, PyObject *unused) {
    (void)unused;
    return PyLong_FromSize_t(s->cap * 16);
}

static PyMethodDef keyset_methods[] = {
    {"check_add_packed", (PyCFunction)check_add_packed, METH_O,
     "A byte a value (1: seen before), each 16-byte value added."},
    {"contains", (PyCFunction)contains, METH_VARARGS,
     "A byte a (hi, lo) pair of uint64 buffers (1: held); adds none."},
    {"nbytes", (PyCFunction)nbytes, METH_NOARGS, "The table's size in bytes."},
    {NULL, NULL, 0, NULL}};

static PySequenceMethods keyset_seq = {.sq_length = (lenfunc)keyset_len};

static PyTypeObject KeySetType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "batchd.intake._keyset.KeySet",
    .tp_basicsize = sizeof(KeySet),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A set of 16-byte digests.",
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)keyset_dealloc,
    .tp_methods = keyset_methods,
    .tp_as_sequence = &keyset_seq,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_keyset", NULL, -1, NULL};

PyMODINIT_FUNC PyInit__keyset(void) {
    if (PyType_Ready(&KeySetType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&KeySetType);
    if (PyModule_AddObject(m, "KeySet", (PyObject *)&KeySetType) < 0) {
        Py_DECREF(&KeySetType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
