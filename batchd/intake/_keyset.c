/* KeySet: a set of 16-byte digests (request keys, id digests) for in-run dedup, in C.

   The same answers as intake.seen.SeenSet: `check_add_packed(packed)` tells, for each
   16-byte value laid end to end, whether it was seen before (in an earlier call, or earlier
   in this one) and adds it. The values are kept once each, in order, in one array (16
   bytes a value, grown by a quarter in place); a table of 4-byte places into it (0: empty)
   is probed from a value's first 8 bytes (BLAKE2b output: uniform already), linearly, and
   rebuilt twice the size from the values past 70% full. So the set costs 16 bytes a value
   and 6 to 12 more for the table, and a rebuild frees the old table first: memory grows
   with the values held, with no doubling peak. `packed(start, count)` copies values out,
   in the order added (a spill moves the set to disk with it, a window at a time). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    uint64_t *values; /* 2 words a value, in the order added */
    size_t n, room;   /* values held; values the array has room for */
    uint32_t *table;  /* a value's place + 1; 0: empty */
    size_t cap;       /* the table's slots, a power of two */
} KeySet;

#define MAX_VALUES 0xFFFFFFF0u

static void place(uint32_t *table, size_t mask, const uint64_t *values, uint32_t i) {
    size_t j = values[2 * i] & mask;
    while (table[j]) j = (j + 1) & mask;
    table[j] = i + 1;
}

static int rebuild(KeySet *s) {
    size_t cap = s->cap ? s->cap * 2 : 1024;
    PyMem_Free(s->table); /* rebuilt from the values: never two tables at once */
    s->table = PyMem_Calloc(cap, sizeof(uint32_t));
    s->cap = 0;
    if (!s->table) {
        PyErr_NoMemory();
        return -1;
    }
    s->cap = cap;
    for (size_t i = 0; i < s->n; i++) place(s->table, cap - 1, s->values, (uint32_t)i);
    return 0;
}

/* 1: held already; 0: not, and added now; -1: a Python error is set. */
static int check_add(KeySet *s, uint64_t a, uint64_t b) {
    if (s->cap) {
        size_t mask = s->cap - 1, j = a & mask;
        uint32_t at;
        while ((at = s->table[j]) != 0) {
            const uint64_t *v = s->values + 2 * (at - 1);
            if (v[0] == a && v[1] == b) return 1;
            j = (j + 1) & mask;
        }
    }
    if (s->n >= MAX_VALUES) {
        PyErr_SetString(PyExc_OverflowError, "the dedup set is full (4G values)");
        return -1;
    }
    if (s->n == s->room) {
        size_t room = s->room ? s->room + s->room / 4 : 1024; /* 1.25x: in place (mremap) */
        uint64_t *values = PyMem_Realloc(s->values, room * 16);
        if (!values) {
            PyErr_NoMemory();
            return -1;
        }
        s->values = values;
        s->room = room;
    }
    s->values[2 * s->n] = a;
    s->values[2 * s->n + 1] = b;
    s->n++;
    if (s->n * 10 > s->cap * 7) return rebuild(s) < 0 ? -1 : 0; /* places the new one too */
    place(s->table, s->cap - 1, s->values, (uint32_t)(s->n - 1));
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
        int r = check_add(s, a, b);
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

/* Values start .. start + count (clipped to those held), 16 bytes each, as added. */
static PyObject *packed(KeySet *s, PyObject *args) {
    Py_ssize_t start, count;
    if (!PyArg_ParseTuple(args, "nn", &start, &count)) return NULL;
    if (start < 0 || count < 0) {
        PyErr_SetString(PyExc_ValueError, "start and count must not be negative");
        return NULL;
    }
    size_t from = (size_t)start < s->n ? (size_t)start : s->n;
    size_t take = s->n - from < (size_t)count ? s->n - from : (size_t)count;
    return PyBytes_FromStringAndSize((const char *)(s->values + 2 * from), (Py_ssize_t)(take * 16));
}

static Py_ssize_t keyset_len(KeySet *s) { return (Py_ssize_t)s->n; }

static void keyset_dealloc(KeySet *s) {
    PyMem_Free(s->values);
    PyMem_Free(s->table);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static PyObject *nbytes(KeySet *s, PyObject *unused) {
    (void)unused;
    return PyLong_FromSize_t(s->room * 16 + s->cap * sizeof(uint32_t));
}

static PyMethodDef keyset_methods[] = {
    {"check_add_packed", (PyCFunction)check_add_packed, METH_O,
     "A byte a value (1: seen before), each 16-byte value added."},
    {"packed", (PyCFunction)packed, METH_VARARGS,
     "Values start .. start + count, 16 bytes each, in the order added."},
    {"nbytes", (PyCFunction)nbytes, METH_NOARGS, "The set's memory in bytes."},
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
