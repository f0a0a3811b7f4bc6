/* ticktape._rows: flat events (NamedTuples) straight from Arrow column buffers.
 *
 * The backtest reads sealed segments from their Parquet copies; turning a batch of columns into
 * event tuples through Python lists (`to_pylist` per column, then `zip` and `tuple.__new__`) made
 * a Python object per value three times over. Here each value object is made once, from the
 * column's own buffers, and put straight into the event tuple.
 *
 * build(cls, n, specs) -> list of n `cls` instances (cls: a tuple subclass with one field per spec).
 * Each spec is (kind, data, extra, offset, values):
 *   KIND_NONE  every row None (an all-null column)
 *   KIND_F64   data: float64 values
 *   KIND_I64   data: int64 values
 *   KIND_BOOL  data: bit-packed booleans (LSB first)
 *   KIND_STR   data: int32 offsets (n + 1 of them from `offset`), extra: UTF-8 bytes
 *   KIND_DICT  data: int32 indices into `values` (a tuple: its items are shared, not copied)
 * `offset` is the column's Arrow offset (in elements, or bits for booleans). Columns with some
 * nulls are not taken (the caller uses the Python twin, `ticktape.tape.arrow_rows.python_rows`).
 *
 * Nothing here trusts a length it did not check: every buffer is checked against n + offset
 * before the loop, every string's offsets against the data's size and every index against the
 * values tuple. The buffers are held as Py_buffer views (their exporters stay alive and cannot
 * change size: Arrow buffers are immutable); `values` is a tuple. The only calls that can run
 * Python code are allocations (a tuple allocation may start the cyclic GC): they touch none of
 * the state the loop relies on.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "avro_bytes.h" /* avro_tuple_reset_hash */

enum { KIND_NONE = 0, KIND_F64 = 1, KIND_I64 = 2, KIND_BOOL = 3, KIND_STR = 4, KIND_DICT = 5 };

typedef struct {
    int kind;
    Py_ssize_t offset;
    Py_buffer data;
    Py_buffer extra;
    int has_data;
    int has_extra;
    PyObject *values; /* borrowed from the spec tuple, which the caller's args keep alive */
} Column;

static void release(Column *cols, Py_ssize_t ncols) {
    for (Py_ssize_t i = 0; i < ncols; i++) {
        if (cols[i].has_data) PyBuffer_Release(&cols[i].data);
        if (cols[i].has_extra) PyBuffer_Release(&cols[i].extra);
    }
    PyMem_Free(cols);
}

static int need(const Py_buffer *buf, Py_ssize_t items, Py_ssize_t size, Py_ssize_t col) {
    /* items * size bytes must fit in buf (no overflow: items and size are small and positive) */
    if (items < 0 || items > PY_SSIZE_T_MAX / size || buf->len < items * size) {
        PyErr_Format(PyExc_ValueError, "column %zd: buffer of %zd bytes is too short for %zd values", col,
                     buf->len, items);
        return -1;
    }
    return 0;
}

static int setup(Column *c, PyObject *spec, Py_ssize_t n, Py_ssize_t col) {
    if (!PyTuple_Check(spec) || PyTuple_GET_SIZE(spec) != 5) {
        PyErr_Format(PyExc_TypeError, "column %zd: a spec is (kind, data, extra, offset, values)", col);
        return -1;
    }
    long kind = PyLong_AsLong(PyTuple_GET_ITEM(spec, 0));
    if (kind == -1 && PyErr_Occurred()) return -1;
    if (kind < KIND_NONE || kind > KIND_DICT) {
        PyErr_Format(PyExc_ValueError, "column %zd: unknown kind %ld", col, kind);
        return -1;
    }
    c->kind = (int)kind;
    c->offset = PyLong_AsSsize_t(PyTuple_GET_ITEM(spec, 3));
    if (c->offset == -1 && PyErr_Occurred()) return -1;
    if (c->offset < 0 || c->offset > PY_SSIZE_T_MAX / 16 - n) {
        PyErr_Format(PyExc_ValueError, "column %zd: bad offset %zd", col, c->offset);
        return -1;
    }
    if (c->kind == KIND_NONE) return 0;
    if (PyObject_GetBuffer(PyTuple_GET_ITEM(spec, 1), &c->data, PyBUF_SIMPLE) < 0) return -1;
    c->has_data = 1;
    Py_ssize_t end = c->offset + n;
    switch (c->kind) {
    case KIND_F64:
    case KIND_I64:
        return need(&c->data, end, 8, col);
    case KIND_BOOL:
        return need(&c->data, (end + 7) / 8, 1, col);
    case KIND_STR:
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(spec, 2), &c->extra, PyBUF_SIMPLE) < 0) return -1;
        c->has_extra = 1;
        return need(&c->data, end + 1, 4, col);
    default: /* KIND_DICT */
        c->values = PyTuple_GET_ITEM(spec, 4);
        if (!PyTuple_Check(c->values)) {
            PyErr_Format(PyExc_TypeError, "column %zd: dictionary values must be a tuple", col);
            return -1;
        }
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(c->values); k++) { /* rows are untracked: atomic values only */
            PyObject *v = PyTuple_GET_ITEM(c->values, k);
            if (v != Py_None && !PyUnicode_CheckExact(v)) {
                PyErr_Format(PyExc_TypeError, "column %zd: dictionary values must be str or None", col);
                return -1;
            }
        }
        return need(&c->data, end, 4, col);
    }
}

/* The value of row i of column c as a new reference, or NULL with an exception set. */
static PyObject *value(const Column *c, Py_ssize_t i, Py_ssize_t col) {
    Py_ssize_t at = c->offset + i;
    const char *data = (const char *)c->data.buf;
    switch (c->kind) {
    case KIND_NONE:
        Py_RETURN_NONE;
    case KIND_F64: {
        double d;
        memcpy(&d, data + at * 8, 8); /* memcpy: no alignment assumed */
        return PyFloat_FromDouble(d);
    }
    case KIND_I64: {
        int64_t v;
        memcpy(&v, data + at * 8, 8);
        return PyLong_FromLongLong((long long)v);
    }
    case KIND_BOOL:
        return PyBool_FromLong((((const unsigned char *)data)[at >> 3] >> (at & 7)) & 1);
    case KIND_STR: {
        int32_t lo, hi;
        memcpy(&lo, data + at * 4, 4);
        memcpy(&hi, data + (at + 1) * 4, 4);
        if (lo < 0 || hi < lo || (Py_ssize_t)hi > c->extra.len) {
            PyErr_Format(PyExc_ValueError, "column %zd row %zd: string offsets %d..%d outside %zd bytes", col, i,
                         (int)lo, (int)hi, c->extra.len);
            return NULL;
        }
        return PyUnicode_DecodeUTF8((const char *)c->extra.buf + lo, hi - lo, "strict");
    }
    default: { /* KIND_DICT */
        int32_t k;
        memcpy(&k, data + at * 4, 4);
        if (k < 0 || (Py_ssize_t)k >= PyTuple_GET_SIZE(c->values)) {
            PyErr_Format(PyExc_ValueError, "column %zd row %zd: dictionary index %d outside %zd values", col, i,
                         (int)k, PyTuple_GET_SIZE(c->values));
            return NULL;
        }
        PyObject *v = PyTuple_GET_ITEM(c->values, k);
        Py_INCREF(v);
        return v;
    }
    }
}

static PyObject *build(PyObject *self, PyObject *args) {
    (void)self;
    PyTypeObject *cls;
    Py_ssize_t n;
    PyObject *specs;
    if (!PyArg_ParseTuple(args, "O!nO!:build", &PyType_Type, &cls, &n, &PyTuple_Type, &specs)) return NULL;
    if (!PyType_IsSubtype(cls, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "build: cls must be a tuple subclass (an event NamedTuple)");
        return NULL;
    }
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "build: n must be >= 0");
        return NULL;
    }
    Py_ssize_t ncols = PyTuple_GET_SIZE(specs);
    Column *cols = PyMem_Calloc(ncols > 0 ? (size_t)ncols : 1, sizeof(Column));
    if (cols == NULL) return PyErr_NoMemory();
    for (Py_ssize_t j = 0; j < ncols; j++) {
        if (setup(&cols[j], PyTuple_GET_ITEM(specs, j), n, j) < 0) {
            release(cols, ncols);
            return NULL;
        }
    }
    PyObject *out = PyList_New(n);
    if (out == NULL) {
        release(cols, ncols);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *row = cls->tp_alloc(cls, ncols);
        if (row == NULL) goto fail;
        avro_tuple_reset_hash(row); /* tp_alloc zeroes a 3.14+ tuple's hash cache: "not computed" is -1 */
        PyList_SET_ITEM(out, i, row); /* the list owns it now; its unset items are NULL until filled */
        for (Py_ssize_t j = 0; j < ncols; j++) {
            PyObject *v = value(&cols[j], i, j);
            if (v == NULL) goto fail;
            PyTuple_SET_ITEM(row, j, v);
        }
        /* Every item is a str, int, float, bool or None, which hold no references: the tuple cannot
         * be part of a cycle, and untracked the cyclic GC does not traverse the batch's thousands of
         * live rows (CPython untracks such tuples itself, but only when a collection reaches them). */
        if (PyObject_GC_IsTracked(row)) PyObject_GC_UnTrack(row);
    }
    release(cols, ncols);
    return out;
fail:
    release(cols, ncols);
    Py_DECREF(out);
    return NULL;
}

static PyMethodDef methods[] = {
    {"build", build, METH_VARARGS, "build(cls, n, specs) -> list of n cls tuples from Arrow column buffers."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_rows", "Flat events straight from Arrow buffers.", -1,
                                    methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__rows(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddIntConstant(m, "KIND_NONE", KIND_NONE) < 0 || PyModule_AddIntConstant(m, "KIND_F64", KIND_F64) < 0 ||
        PyModule_AddIntConstant(m, "KIND_I64", KIND_I64) < 0 || PyModule_AddIntConstant(m, "KIND_BOOL", KIND_BOOL) < 0 ||
        PyModule_AddIntConstant(m, "KIND_STR", KIND_STR) < 0 || PyModule_AddIntConstant(m, "KIND_DICT", KIND_DICT) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
