/*
 * ticktape._avrovm -- a tiny interpreter for Avro binary encoding.
 *
 * The Python codec compiles an Avro schema once into a "program": nested
 * tuples whose first element is a small integer opcode (see OP_* below and
 * the module constants NULL, BOOLEAN, ... RECORD).  This module walks such a
 * program to encode Python values into Avro binary bodies (Avro 1.11 spec,
 * "Binary Encoding") and to decode them back.
 *
 *   (0,)                                  null      <-> None
 *   (1,)                                  boolean   <-> bool
 *   (2,)  (3,)                            int, long <-> int (zigzag varint)
 *   (4,)  (5,)                            float, double <-> float (LE IEEE 754)
 *   (6,)  (7,)                            bytes, string (UTF-8) <-> bytes, str
 *   (8, symbols: tuple[str], index: dict[str, int])   enum <-> str
 *   (9, size: int)                        fixed     <-> bytes
 *   (10, item_program)                    array     <-> tuple (encode: any sequence)
 *   (11, value_program)                   map       <-> dict[str, value]
 *   (12, branches: tuple, selector)       union (selector: None or
 *                                         dict[type, branch index])
 *   (13, cls, fields: tuple)              record    <-> cls instance (a
 *                                         NamedTuple class) or tuple if
 *                                         cls is None
 *
 * Value rules follow the pure-Python engine (ticktape/avro_program.py), so the
 * two produce identical bytes and equal values: int/long take int (not bool),
 * float/double take float or int (not bool), boolean takes bool (or int, by
 * truthiness), bytes/fixed take any contiguous buffer, arrays take any
 * sequence, maps any mapping with str keys, records any tuple of the right
 * length (matched positionally).  Decoded records built from a NamedTuple
 * class bypass its __new__, exactly like cls._make(values).
 *
 * Decoding never reads outside the input buffer; malformed or truncated input
 * raises ValueError mentioning the byte position.  Malformed programs raise
 * TypeError.  Encode errors are TypeError / ValueError / OverflowError with the
 * path to the offending value ("field 4 (runners): item 1: field 0 (price):
 * expected float, got str").  Encoding writes into a private growable buffer,
 * so nothing is appended to an output bytearray unless the whole value (or
 * batch) encoded successfully.
 *
 * decode_columns is a second decoder for the file tape's blocks of flat
 * records: it writes Arrow column buffers instead of Python objects (see the
 * "decode_columns" section below).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "avro_bytes.h"

enum {
    OP_NULL = 0,
    OP_BOOLEAN = 1,
    OP_INT = 2,
    OP_LONG = 3,
    OP_FLOAT = 4,
    OP_DOUBLE = 5,
    OP_BYTES = 6,
    OP_STRING = 7,
    OP_ENUM = 8,
    OP_FIXED = 9,
    OP_ARRAY = 10,
    OP_MAP = 11,
    OP_UNION = 12,
    OP_RECORD = 13,
    OP_COUNT = 14
};

static const char *const op_names[OP_COUNT] = {
    "NULL", "BOOLEAN", "INT", "LONG", "FLOAT", "DOUBLE", "BYTES", "STRING",
    "ENUM", "FIXED", "ARRAY", "MAP", "UNION", "RECORD",
};

/* Minimum tuple length of a program node for each opcode. */
static const Py_ssize_t op_arity[OP_COUNT] = {
    1, 1, 1, 1, 1, 1, 1, 1, 3, 2, 2, 2, 3, 3,
};

/* Maximum nesting of container programs (records, arrays, maps, unions).
 * Programs are finite trees of tuples, so this only guards the C stack
 * against absurdly deep (or adversarially built) programs. */
#define MAX_DEPTH 500

/* Arrays/maps whose items can be encoded in zero bytes (e.g. array<null>)
 * cannot be bounded by the remaining input size; cap their length so that
 * garbage block counts cannot make us allocate without limit. */
#define MAX_ZERO_WIDTH_ITEMS ((int64_t)1 << 20)

/* ------------------------------------------------------------------------ */
/* Error helpers                                                            */
/* ------------------------------------------------------------------------ */

/* Prefix the pending exception's message with a location ("field 3 (price)",
 * "item 7", ...).  Only TypeError / ValueError / OverflowError (and their
 * subclasses, which are re-raised as the base class with the original
 * exception as __cause__) are rewritten; anything else (MemoryError,
 * RecursionError, KeyboardInterrupt, ...) is left untouched. */
static void
add_error_prefix(PyObject *prefix /* stolen */)
{
    PyObject *type, *value, *tb, *base, *msg = NULL, *newmsg = NULL;
    PyObject *newexc = NULL;

    if (prefix == NULL) {
        return; /* keep whatever exception we had (or the new one) */
    }
    PyErr_Fetch(&type, &value, &tb);
    if (type == NULL) {
        Py_DECREF(prefix);
        return;
    }
    if (PyErr_GivenExceptionMatches(type, PyExc_OverflowError)) {
        base = PyExc_OverflowError;
    }
    else if (PyErr_GivenExceptionMatches(type, PyExc_TypeError)) {
        base = PyExc_TypeError;
    }
    else if (PyErr_GivenExceptionMatches(type, PyExc_ValueError)) {
        base = PyExc_ValueError;
    }
    else {
        PyErr_Restore(type, value, tb);
        Py_DECREF(prefix);
        return;
    }
    PyErr_NormalizeException(&type, &value, &tb);
    if (value == NULL) {
        goto keep_original;
    }
    msg = PyObject_Str(value);
    if (msg == NULL) {
        PyErr_Clear();
        goto keep_original;
    }
    newmsg = PyUnicode_FromFormat("%U: %U", prefix, msg);
    if (newmsg == NULL) {
        PyErr_Clear();
        goto keep_original;
    }
    newexc = PyObject_CallOneArg(base, newmsg);
    if (newexc == NULL) {
        PyErr_Clear();
        goto keep_original;
    }
    if (tb != NULL) {
        PyException_SetTraceback(newexc, tb);
    }
    if (type != base) {
        /* Preserve the original (e.g. UnicodeEncodeError) as the cause. */
        PyException_SetCause(newexc, value); /* steals value */
        value = NULL;
    }
    Py_XDECREF(value);
    Py_DECREF(type);
    Py_DECREF(prefix);
    Py_DECREF(msg);
    Py_DECREF(newmsg);
    Py_INCREF(base);
    PyErr_Restore(base, newexc, tb);
    return;

keep_original:
    Py_DECREF(prefix);
    Py_XDECREF(msg);
    Py_XDECREF(newmsg);
    PyErr_Restore(type, value, tb);
}

/* "field 3 (name)" if cls has a usable _fields tuple, else "field 3". */
static void
prefix_field(PyObject *cls, Py_ssize_t i)
{
    PyObject *prefix = NULL;
    if (cls != NULL && cls != Py_None) {
        PyObject *type, *value, *tb, *fields;
        PyErr_Fetch(&type, &value, &tb);
        fields = PyObject_GetAttrString(cls, "_fields");
        if (fields == NULL) {
            PyErr_Clear();
        }
        else {
            if (PyTuple_Check(fields) && i < PyTuple_GET_SIZE(fields) &&
                PyUnicode_Check(PyTuple_GET_ITEM(fields, i))) {
                prefix = PyUnicode_FromFormat(
                    "field %zd (%U)", i, PyTuple_GET_ITEM(fields, i));
                if (prefix == NULL) {
                    PyErr_Clear();
                }
            }
            Py_DECREF(fields);
        }
        PyErr_Restore(type, value, tb);
    }
    if (prefix == NULL) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        prefix = PyUnicode_FromFormat("field %zd", i);
        if (prefix == NULL) {
            PyErr_Clear();
        }
        PyErr_Restore(type, value, tb);
    }
    add_error_prefix(prefix);
}

static void
prefix_index(const char *what, Py_ssize_t i)
{
    PyObject *type, *value, *tb, *prefix;
    PyErr_Fetch(&type, &value, &tb);
    prefix = PyUnicode_FromFormat("%s %zd", what, i);
    if (prefix == NULL) {
        PyErr_Clear();
    }
    PyErr_Restore(type, value, tb);
    add_error_prefix(prefix);
}

static void
prefix_key(PyObject *key)
{
    PyObject *type, *value, *tb, *prefix;
    PyErr_Fetch(&type, &value, &tb);
    prefix = PyUnicode_FromFormat("map key %.100R", key);
    if (prefix == NULL) {
        PyErr_Clear();
    }
    PyErr_Restore(type, value, tb);
    add_error_prefix(prefix);
}

static void
invalid_program(PyObject *prog, const char *why)
{
    PyErr_Clear();
    PyErr_Format(PyExc_TypeError, "invalid avrovm program node %.200R: %s",
                 prog, why);
}

/* Return the opcode of a program node, validating its shape; -1 on error. */
static inline int
get_op(PyObject *prog)
{
    if (PyTuple_Check(prog)) {
        Py_ssize_t n = PyTuple_GET_SIZE(prog);
        if (n > 0) {
            PyObject *o = PyTuple_GET_ITEM(prog, 0);
            if (PyLong_Check(o)) {
                long op = PyLong_AsLong(o);
                if (op >= 0 && op < OP_COUNT) {
                    if (n >= op_arity[op]) {
                        return (int)op;
                    }
                    invalid_program(prog, "too few elements for opcode");
                    return -1;
                }
            }
        }
    }
    invalid_program(prog, "expected a tuple starting with an opcode 0..13");
    return -1;
}

static inline PyObject *
get_tuple_arg(PyObject *prog, Py_ssize_t i, const char *what)
{
    PyObject *o = PyTuple_GET_ITEM(prog, i);
    if (!PyTuple_Check(o)) {
        invalid_program(prog, what);
        return NULL;
    }
    return o;
}

/* ------------------------------------------------------------------------ */
/* Decoder                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct PairEntry PairEntry;

typedef struct {
    const unsigned char *buf;
    Py_ssize_t len;
    Py_ssize_t pos;
    int depth;
    PairEntry *pairs; /* the module's pair cache (see dec_double_pair) */
} Dec;

static PyObject *dec_value(Dec *d, PyObject *prog);
static inline int is_double_pair(PyObject *cls, PyObject *fields);
static PyObject *dec_double_pair(Dec *d, PyObject *cls);

static int
dec_truncated(Dec *d, Py_ssize_t need, const char *what)
{
    PyErr_Format(PyExc_ValueError,
                 "truncated data: %s needs %zd byte(s) at byte %zd but only "
                 "%zd remain",
                 what, need, d->pos, d->len - d->pos);
    return -1;
}

/* Read a raw (not zigzag-decoded) varint of at most 10 bytes. */
static inline int
dec_varint(Dec *d, uint64_t *out)
{
    const unsigned char *p = d->buf + d->pos;
    Py_ssize_t avail = d->len - d->pos;
    uint64_t result = 0;
    int shift = 0;
    Py_ssize_t i;

    if (avail > 0 && p[0] < 0x80) {
        *out = p[0];
        d->pos += 1;
        return 0;
    }
    for (i = 0; i < 10; i++) {
        unsigned int c;
        if (i >= avail) {
            PyErr_Format(PyExc_ValueError,
                         "truncated data: unterminated varint at byte %zd",
                         d->pos);
            return -1;
        }
        c = p[i];
        if (i == 9 && c > 1) {
            PyErr_Format(PyExc_ValueError,
                         "malformed varint at byte %zd: more than 64 bits",
                         d->pos);
            return -1;
        }
        result |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            d->pos += i + 1;
            *out = result;
            return 0;
        }
        shift += 7;
    }
    /* unreachable: i == 9 either terminates or fails the c > 1 check */
    PyErr_Format(PyExc_ValueError, "malformed varint at byte %zd", d->pos);
    return -1;
}

static inline int
dec_long(Dec *d, int64_t *out)
{
    uint64_t z;
    if (dec_varint(d, &z) < 0) {
        return -1;
    }
    *out = (int64_t)((z >> 1) ^ (~(z & 1) + 1));
    return 0;
}

/* Read a non-negative length that must fit in the remaining input. */
static inline int
dec_length(Dec *d, Py_ssize_t *out, const char *what)
{
    Py_ssize_t start = d->pos;
    int64_t n;
    if (dec_long(d, &n) < 0) {
        return -1;
    }
    if (n < 0) {
        PyErr_Format(PyExc_ValueError, "negative %s length %lld at byte %zd",
                     what, (long long)n, start);
        return -1;
    }
    if (n > (int64_t)(d->len - d->pos)) {
        PyErr_Format(PyExc_ValueError,
                     "truncated data: %s length %lld at byte %zd exceeds the "
                     "%zd remaining byte(s)",
                     what, (long long)n, start, d->len - d->pos);
        return -1;
    }
    *out = (Py_ssize_t)n;
    return 0;
}

static PyObject *
dec_string(Dec *d)
{
    Py_ssize_t start = d->pos, n;
    PyObject *s;
    if (dec_length(d, &n, "string") < 0) {
        return NULL;
    }
    s = PyUnicode_DecodeUTF8((const char *)d->buf + d->pos, n, "strict");
    if (s == NULL) {
        PyObject *type, *value, *tb, *newexc = NULL, *reason = NULL;
        Py_ssize_t bad = 0;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (value == NULL ||
            PyUnicodeDecodeError_GetStart(value, &bad) < 0 ||
            (reason = PyUnicodeDecodeError_GetReason(value)) == NULL) {
            PyErr_Clear();
        }
        if (reason != NULL) {
            PyErr_Format(PyExc_ValueError,
                         "invalid UTF-8 in string at byte %zd (byte %zd: %U)",
                         start, d->pos + bad, reason);
            Py_DECREF(reason);
        }
        else {
            PyErr_Format(PyExc_ValueError,
                         "invalid UTF-8 in string at byte %zd", start);
        }
        if (value != NULL) {
            PyObject *t2, *tb2;
            PyErr_Fetch(&t2, &newexc, &tb2);
            PyErr_NormalizeException(&t2, &newexc, &tb2);
            if (newexc != NULL) {
                PyException_SetCause(newexc, value); /* steals */
                value = NULL;
            }
            PyErr_Restore(t2, newexc, tb2);
        }
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
        return NULL;
    }
    d->pos += n;
    return s;
}

/* Minimum number of bytes any value of this program encodes to (saturating),
 * or -1 with an exception set for a malformed program. */
static int64_t
min_width(PyObject *prog, int depth)
{
    int op;
    if (depth > MAX_DEPTH) {
        PyErr_SetString(PyExc_RecursionError,
                        "avrovm program nested too deeply");
        return -1;
    }
    op = get_op(prog);
    switch (op) {
    case -1:
        return -1;
    case OP_NULL:
        return 0;
    case OP_FLOAT:
        return 4;
    case OP_DOUBLE:
        return 8;
    case OP_FIXED: {
        Py_ssize_t size = PyLong_AsSsize_t(PyTuple_GET_ITEM(prog, 1));
        if (size < 0) {
            invalid_program(prog, "fixed size must be a non-negative int");
            return -1;
        }
        return size;
    }
    case OP_RECORD: {
        PyObject *fields = get_tuple_arg(prog, 2, "record fields must be a tuple");
        Py_ssize_t i;
        int64_t total = 0;
        if (fields == NULL) {
            return -1;
        }
        for (i = 0; i < PyTuple_GET_SIZE(fields); i++) {
            int64_t w = min_width(PyTuple_GET_ITEM(fields, i), depth + 1);
            if (w < 0) {
                return -1;
            }
            total += w;
            if (total > ((int64_t)1 << 40)) {
                return (int64_t)1 << 40;
            }
        }
        return total;
    }
    default:
        /* every other type needs at least one byte (a varint or a byte) */
        return 1;
    }
}

/* Check a block item count against the remaining input. */
static int
check_block_count(Dec *d, PyObject *item_prog, int64_t count, int64_t so_far,
                  Py_ssize_t at, int is_map)
{
    int64_t remaining = (int64_t)(d->len - d->pos);
    int64_t w;
    if (count <= remaining) {
        return 0;
    }
    w = is_map ? 1 : min_width(item_prog, d->depth + 1);
    if (w < 0) {
        return -1;
    }
    if (w > 0) {
        PyErr_Format(PyExc_ValueError,
                     "truncated data: block count %lld at byte %zd exceeds the "
                     "%lld remaining byte(s)",
                     (long long)count, at, (long long)remaining);
        return -1;
    }
    if (count > MAX_ZERO_WIDTH_ITEMS - so_far) {
        PyErr_Format(PyExc_ValueError,
                     "block count %lld at byte %zd is too large for "
                     "zero-width items (limit %lld)",
                     (long long)count, at, (long long)MAX_ZERO_WIDTH_ITEMS);
        return -1;
    }
    return 0;
}

/* Read one block header; *count == 0 means end of the array/map. */
static int
dec_block_header(Dec *d, int64_t *count)
{
    Py_ssize_t start = d->pos;
    int64_t n, size;
    if (dec_long(d, &n) < 0) {
        return -1;
    }
    if (n < 0) {
        if (n == INT64_MIN) {
            PyErr_Format(PyExc_ValueError, "invalid block count at byte %zd",
                         start);
            return -1;
        }
        n = -n;
        /* the block size in bytes follows; we do not need it */
        start = d->pos;
        if (dec_long(d, &size) < 0) {
            return -1;
        }
        if (size < 0) {
            PyErr_Format(PyExc_ValueError,
                         "negative block byte size %lld at byte %zd",
                         (long long)size, start);
            return -1;
        }
    }
    *count = n;
    return 0;
}

/* Decoded records and arrays are immutable tuples.  When every item is an
 * atomic object (str, int, float, bytes, None, bool) or an untracked tuple,
 * the tuple cannot be part of a reference cycle, so it is untracked from the
 * cyclic GC right away -- what CPython does lazily for plain tuples.  This
 * keeps the GC from repeatedly traversing millions of decoded events (e.g.
 * decode_many over a large block) without changing any semantics. */
static inline int
gc_safe_item(PyObject *v)
{
    return !PyType_IS_GC(Py_TYPE(v)) ||
           (PyTuple_Check(v) && !PyObject_GC_IsTracked(v));
}

static PyObject *
dec_array(Dec *d, PyObject *item_prog)
{
    /* Arrays decode to tuples (like the pure-Python engine in
     * ticktape/avro_program.py).  The common single-block case fills a tuple
     * directly; further blocks spill into a list converted at the end. */
    PyObject *tup = NULL, *list = NULL, *res;
    PyObject *pair_cls = NULL;  /* set when items are two-double records */
    int64_t total = 0;
    int untrack = 1;

    if (PyTuple_Check(item_prog) && PyTuple_GET_SIZE(item_prog) >= 3 &&
        PyLong_Check(PyTuple_GET_ITEM(item_prog, 0)) &&
        PyLong_AsLong(PyTuple_GET_ITEM(item_prog, 0)) == OP_RECORD &&
        PyTuple_Check(PyTuple_GET_ITEM(item_prog, 2)) &&
        is_double_pair(PyTuple_GET_ITEM(item_prog, 1), PyTuple_GET_ITEM(item_prog, 2))) {
        pair_cls = PyTuple_GET_ITEM(item_prog, 1);
    }

    for (;;) {
        Py_ssize_t at = d->pos, i, n;
        int64_t count;
        if (dec_block_header(d, &count) < 0) {
            goto fail;
        }
        if (count == 0) {
            break;
        }
        if (check_block_count(d, item_prog, count, total, at, 0) < 0) {
            goto fail;
        }
        n = (Py_ssize_t)count;
        if (tup == NULL && list == NULL) {
            tup = PyTuple_New(n);
            if (tup == NULL) {
                return NULL;
            }
            for (i = 0; i < n; i++) {
                /* ladders: skip the generic dispatch, items are untracked */
                PyObject *v = pair_cls != NULL ? dec_double_pair(d, pair_cls) : dec_value(d, item_prog);
                if (v == NULL) {
                    prefix_index("item", i);
                    goto fail;
                }
                PyTuple_SET_ITEM(tup, i, v);
                untrack &= pair_cls != NULL || gc_safe_item(v);
            }
        }
        else {
            if (list == NULL) {
                list = PySequence_List(tup);
                Py_CLEAR(tup);
                if (list == NULL) {
                    goto fail;
                }
            }
            for (i = 0; i < n; i++) {
                PyObject *v = dec_value(d, item_prog);
                int r;
                if (v == NULL) {
                    prefix_index("item", (Py_ssize_t)total + i);
                    goto fail;
                }
                untrack &= gc_safe_item(v);
                r = PyList_Append(list, v);
                Py_DECREF(v);
                if (r < 0) {
                    goto fail;
                }
            }
        }
        total += count;
    }
    if (list != NULL) {
        res = PyList_AsTuple(list);
        Py_DECREF(list);
        tup = res;
    }
    else if (tup == NULL) {
        return PyTuple_New(0);
    }
    if (tup != NULL && untrack && PyObject_GC_IsTracked(tup)) {
        PyObject_GC_UnTrack(tup);
    }
    return tup;

fail:
    Py_XDECREF(tup);
    Py_XDECREF(list);
    return NULL;
}

static PyObject *
dec_map(Dec *d, PyObject *value_prog)
{
    PyObject *dict = PyDict_New();
    int64_t total = 0;
    if (dict == NULL) {
        return NULL;
    }
    for (;;) {
        Py_ssize_t at = d->pos;
        int64_t count, i;
        if (dec_block_header(d, &count) < 0) {
            goto fail;
        }
        if (count == 0) {
            break;
        }
        if (check_block_count(d, value_prog, count, total, at, 1) < 0) {
            goto fail;
        }
        for (i = 0; i < count; i++) {
            PyObject *k, *v;
            int r;
            k = dec_string(d);
            if (k == NULL) {
                prefix_index("map entry", (Py_ssize_t)(total + i));
                goto fail;
            }
            v = dec_value(d, value_prog);
            if (v == NULL) {
                prefix_key(k);
                Py_DECREF(k);
                goto fail;
            }
            r = PyDict_SetItem(dict, k, v);
            Py_DECREF(k);
            Py_DECREF(v);
            if (r < 0) {
                goto fail;
            }
        }
        total += count;
    }
    return dict;

fail:
    Py_DECREF(dict);
    return NULL;
}

/* Can instances of cls be built by tp_alloc + filling the tuple slots?
 * True for NamedTuple classes (tuple subclasses with __slots__ = ()). */
static inline int
is_plain_tuple_subclass(PyObject *cls)
{
    PyTypeObject *tp;
    if (!PyType_Check(cls)) {
        return 0;
    }
    tp = (PyTypeObject *)cls;
    return PyType_FastSubclass(tp, Py_TPFLAGS_TUPLE_SUBCLASS) &&
           tp->tp_basicsize == PyTuple_Type.tp_basicsize &&
           tp->tp_itemsize == PyTuple_Type.tp_itemsize &&
           tp->tp_dictoffset == 0 && tp->tp_weaklistoffset == 0 &&
           tp->tp_alloc == PyType_GenericAlloc && PyType_IS_GC(tp);
}

/* Allocate an instance of a plain tuple subclass with n NULL slots, NOT yet
 * tracked by the GC (the caller tracks it once filled, unless it can stay
 * untracked).  Same layout as PyType_GenericAlloc(cls, n) would give. */
static PyObject *
alloc_record(PyTypeObject *tp, Py_ssize_t n)
{
    PyTupleObject *op = PyObject_GC_NewVar(PyTupleObject, tp, n);
    if (op == NULL) {
        return NULL;
    }
    avro_tuple_reset_hash((PyObject *)op);
    if (n > 0) {
        memset(op->ob_item, 0, (size_t)n * sizeof(PyObject *));
    }
    return (PyObject *)op;
}

/* Two-double records (ladder levels: PriceSize {price, size}) repeat from one
 * order-book update to the next: a Betfair MarketBook carries ~380 of them and
 * an update changes only a third.  Decoding hands out an already built,
 * immutable instance when the same class and the same 16 bytes were seen
 * recently, instead of allocating a tuple and two floats.  Equal bytes give an
 * equal value (bit for bit), and NamedTuples of floats are immutable and
 * untracked by the GC, so sharing one is invisible to callers.  The cache is
 * direct-mapped, fixed size, and keeps a strong reference to each entry.
 *
 * It lives in the module's state, not in a static array: its entries are
 * objects of one interpreter (a sub-interpreter imports its own module
 * instance, so has its own cache), and they are released with the module. */
#define PAIR_CACHE_BITS 16
#define PAIR_CACHE_SIZE (1u << PAIR_CACHE_BITS)

struct PairEntry {
    PyObject *cls;  /* borrowed: the entry's instance holds its type */
    uint64_t a, b;
    PyObject *obj;  /* strong reference, or NULL */
};

typedef struct {
    PairEntry *pairs; /* PAIR_CACHE_SIZE entries, calloc'd by avrovm_exec */
} ModState;

/* MurmurHash3's 64-bit finaliser: every input bit reaches the low bits (a
 * double's information sits in its high bits: 1.5 is 0x3FF8000000000000). */
static inline uint64_t
fmix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDull;
    h ^= h >> 33;
    h *= 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 33;
    return h;
}

static inline size_t
pair_slot(PyObject *cls, uint64_t a, uint64_t b)
{
    uint64_t h = fmix64(a ^ fmix64(b ^ (uint64_t)(uintptr_t)cls));
    return (size_t)(h & (PAIR_CACHE_SIZE - 1));
}

/* A plain tuple subclass record of exactly two doubles, on a little-endian
 * machine: eligible for the pair cache. */
static inline int
is_double_pair(PyObject *cls, PyObject *fields)
{
#if PY_BIG_ENDIAN
    (void)cls;
    (void)fields;
    return 0;
#else
    PyObject *f0, *f1;
    if (PyTuple_GET_SIZE(fields) != 2 || cls == Py_None) {
        return 0;
    }
    f0 = PyTuple_GET_ITEM(fields, 0);
    f1 = PyTuple_GET_ITEM(fields, 1);
    return PyTuple_Check(f0) && PyTuple_GET_SIZE(f0) >= 1 && PyTuple_Check(f1) && PyTuple_GET_SIZE(f1) >= 1 &&
           PyLong_Check(PyTuple_GET_ITEM(f0, 0)) && PyLong_AsLong(PyTuple_GET_ITEM(f0, 0)) == OP_DOUBLE &&
           PyLong_Check(PyTuple_GET_ITEM(f1, 0)) && PyLong_AsLong(PyTuple_GET_ITEM(f1, 0)) == OP_DOUBLE &&
           is_plain_tuple_subclass(cls);
#endif
}

static PyObject *
dec_double_pair(Dec *d, PyObject *cls)
{
    uint64_t a, b;
    double x, y;
    size_t slot;
    PairEntry *e;
    PyObject *res, *fx, *fy;

    if (d->len - d->pos < 16) {
        dec_truncated(d, 16, "record of two doubles");
        return NULL;
    }
    memcpy(&a, d->buf + d->pos, 8);
    memcpy(&b, d->buf + d->pos + 8, 8);
    slot = pair_slot(cls, a, b);
    e = &d->pairs[slot];
    if (e->obj != NULL && e->cls == cls && e->a == a && e->b == b) {
        d->pos += 16;
        Py_INCREF(e->obj);
        return e->obj;
    }
    memcpy(&x, &a, 8);
    memcpy(&y, &b, 8);
    res = alloc_record((PyTypeObject *)cls, 2);
    if (res == NULL) {
        return NULL;
    }
    fx = PyFloat_FromDouble(x);
    fy = fx == NULL ? NULL : PyFloat_FromDouble(y);
    if (fy == NULL) {
        Py_XDECREF(fx);
        Py_DECREF(res);
        return NULL;
    }
    PyTuple_SET_ITEM(res, 0, fx);
    PyTuple_SET_ITEM(res, 1, fy);  /* floats only: stays untracked */
    d->pos += 16;
    {
        /* the entry is whole before the old one goes: its dealloc may run a
         * __del__ that decodes again into this very slot */
        PyObject *old = e->obj;
        e->obj = Py_NewRef(res);
        e->cls = cls;
        e->a = a;
        e->b = b;
        Py_XDECREF(old);
    }
    return res;
}

static PyObject *
dec_record(Dec *d, PyObject *prog)
{
    PyObject *cls = PyTuple_GET_ITEM(prog, 1);
    PyObject *fields = get_tuple_arg(prog, 2, "record fields must be a tuple");
    PyObject *res, *out;
    Py_ssize_t n, i;
    int direct, untrack = 1;

    if (fields == NULL) {
        return NULL;
    }
    n = PyTuple_GET_SIZE(fields);
    if (is_double_pair(cls, fields)) {
        return dec_double_pair(d, cls);
    }
    direct = (cls == Py_None);
    if (!direct && is_plain_tuple_subclass(cls)) {
        /* Equivalent to tuple.__new__(cls, values), i.e. cls._make(values):
         * the tuple slots are filled in place.  The object is untracked
         * while being filled; NULL slots are fine for dealloc. */
        res = alloc_record((PyTypeObject *)cls, n);
        direct = 2;
    }
    else {
        res = PyTuple_New(n);
    }
    if (res == NULL) {
        return NULL;
    }
    for (i = 0; i < n; i++) {
        PyObject *v = dec_value(d, PyTuple_GET_ITEM(fields, i));
        if (v == NULL) {
            prefix_field(cls, i);
            Py_DECREF(res);
            return NULL;
        }
        PyTuple_SET_ITEM(res, i, v);
        untrack &= gc_safe_item(v);
    }
    if (direct == 2) {
        if (!untrack) {
            PyObject_GC_Track(res);
        }
        return res;
    }
    if (direct) {
        if (untrack && PyObject_GC_IsTracked(res)) {
            PyObject_GC_UnTrack(res);
        }
        return res;
    }
    if (PyType_Check(cls) &&
        PyType_IsSubtype((PyTypeObject *)cls, &PyTuple_Type)) {
        /* tuple subclass with extra slots / __dict__: tuple.__new__(cls, t) */
        PyObject *args = PyTuple_Pack(1, res);
        Py_DECREF(res);
        if (args == NULL) {
            return NULL;
        }
        out = PyTuple_Type.tp_new((PyTypeObject *)cls, args, NULL);
        Py_DECREF(args);
        return out;
    }
    if (PyCallable_Check(cls)) {
        /* any other record factory (e.g. a dataclass): cls(*values) */
        out = PyObject_Call(cls, res, NULL);
        Py_DECREF(res);
        return out;
    }
    Py_DECREF(res);
    invalid_program(prog, "record class must be None, a tuple subclass or "
                          "a callable");
    return NULL;
}

static PyObject *
dec_value(Dec *d, PyObject *prog)
{
    int op = get_op(prog);
    PyObject *res;

    switch (op) {
    case -1:
        return NULL;

    case OP_NULL:
        Py_RETURN_NONE;

    case OP_BOOLEAN: {
        unsigned char c;
        if (d->pos >= d->len) {
            dec_truncated(d, 1, "boolean");
            return NULL;
        }
        c = d->buf[d->pos];
        if (c > 1) {
            PyErr_Format(PyExc_ValueError,
                         "invalid boolean byte 0x%02x at byte %zd", c, d->pos);
            return NULL;
        }
        d->pos++;
        if (c) {
            Py_RETURN_TRUE;
        }
        Py_RETURN_FALSE;
    }

    case OP_INT: {
        Py_ssize_t start = d->pos;
        int64_t v;
        if (dec_long(d, &v) < 0) {
            return NULL;
        }
        if (v < INT32_MIN || v > INT32_MAX) {
            PyErr_Format(PyExc_ValueError,
                         "int value %lld at byte %zd does not fit in 32 bits",
                         (long long)v, start);
            return NULL;
        }
        return PyLong_FromLong((long)v);
    }

    case OP_LONG: {
        int64_t v;
        if (dec_long(d, &v) < 0) {
            return NULL;
        }
        return PyLong_FromLongLong((long long)v);
    }

    case OP_FLOAT: {
        float f;
        if (d->len - d->pos < 4) {
            dec_truncated(d, 4, "float");
            return NULL;
        }
#if PY_BIG_ENDIAN
        {
            unsigned char tmp[4];
            int k;
            for (k = 0; k < 4; k++) {
                tmp[k] = d->buf[d->pos + 3 - k];
            }
            memcpy(&f, tmp, 4);
        }
#else
        memcpy(&f, d->buf + d->pos, 4);
#endif
        d->pos += 4;
        return PyFloat_FromDouble((double)f);
    }

    case OP_DOUBLE: {
        double x;
        if (d->len - d->pos < 8) {
            dec_truncated(d, 8, "double");
            return NULL;
        }
        x = avro_get_double((const unsigned char *)d->buf + d->pos);
        d->pos += 8;
        return PyFloat_FromDouble(x);
    }

    case OP_BYTES: {
        Py_ssize_t n;
        if (dec_length(d, &n, "bytes") < 0) {
            return NULL;
        }
        res = PyBytes_FromStringAndSize((const char *)d->buf + d->pos, n);
        if (res != NULL) {
            d->pos += n;
        }
        return res;
    }

    case OP_STRING:
        return dec_string(d);

    case OP_ENUM: {
        Py_ssize_t start = d->pos;
        PyObject *symbols = get_tuple_arg(prog, 1, "enum symbols must be a tuple");
        int64_t idx;
        if (symbols == NULL || dec_long(d, &idx) < 0) {
            return NULL;
        }
        if (idx < 0 || idx >= (int64_t)PyTuple_GET_SIZE(symbols)) {
            PyErr_Format(PyExc_ValueError,
                         "enum index %lld at byte %zd out of range (%zd "
                         "symbols)",
                         (long long)idx, start, PyTuple_GET_SIZE(symbols));
            return NULL;
        }
        res = PyTuple_GET_ITEM(symbols, (Py_ssize_t)idx);
        Py_INCREF(res);
        return res;
    }

    case OP_FIXED: {
        Py_ssize_t size = PyLong_AsSsize_t(PyTuple_GET_ITEM(prog, 1));
        if (size < 0) {
            invalid_program(prog, "fixed size must be a non-negative int");
            return NULL;
        }
        if (d->len - d->pos < size) {
            dec_truncated(d, size, "fixed");
            return NULL;
        }
        res = PyBytes_FromStringAndSize((const char *)d->buf + d->pos, size);
        if (res != NULL) {
            d->pos += size;
        }
        return res;
    }

    case OP_ARRAY:
    case OP_MAP:
    case OP_UNION:
    case OP_RECORD:
        break;

    default:
        invalid_program(prog, "unknown opcode");
        return NULL;
    }

    /* container opcodes: guard the recursion depth */
    if (++d->depth > MAX_DEPTH) {
        d->depth--;
        PyErr_SetString(PyExc_RecursionError,
                        "avrovm program nested too deeply");
        return NULL;
    }
    switch (op) {
    case OP_ARRAY:
        res = dec_array(d, PyTuple_GET_ITEM(prog, 1));
        break;
    case OP_MAP:
        res = dec_map(d, PyTuple_GET_ITEM(prog, 1));
        break;
    case OP_UNION: {
        Py_ssize_t start = d->pos;
        PyObject *branches =
            get_tuple_arg(prog, 1, "union branches must be a tuple");
        int64_t idx;
        res = NULL;
        if (branches == NULL || dec_long(d, &idx) < 0) {
            break;
        }
        if (idx < 0 || idx >= (int64_t)PyTuple_GET_SIZE(branches)) {
            PyErr_Format(PyExc_ValueError,
                         "union branch index %lld at byte %zd out of range "
                         "(%zd branches)",
                         (long long)idx, start, PyTuple_GET_SIZE(branches));
            break;
        }
        res = dec_value(d, PyTuple_GET_ITEM(branches, (Py_ssize_t)idx));
        break;
    }
    default: /* OP_RECORD */
        res = dec_record(d, prog);
        break;
    }
    d->depth--;
    return res;
}

/* ------------------------------------------------------------------------ */
/* Encoder                                                                  */
/* ------------------------------------------------------------------------ */

#define ENC_INLINE 512

typedef struct {
    char *data;
    Py_ssize_t len;
    Py_ssize_t cap;
    int depth;
    char inline_buf[ENC_INLINE];
} Enc;

static void
enc_init(Enc *e)
{
    e->data = e->inline_buf;
    e->len = 0;
    e->cap = ENC_INLINE;
    e->depth = 0;
}

static void
enc_free(Enc *e)
{
    if (e->data != e->inline_buf) {
        PyMem_Free(e->data);
    }
    e->data = e->inline_buf;
    e->len = 0;
    e->cap = ENC_INLINE;
}

static int
enc_grow(Enc *e, Py_ssize_t need)
{
    Py_ssize_t newcap = e->cap;
    char *p;
    if (need > PY_SSIZE_T_MAX - e->len) {
        PyErr_NoMemory();
        return -1;
    }
    while (newcap - e->len < need) {
        if (newcap > PY_SSIZE_T_MAX / 2) {
            newcap = e->len + need;
            break;
        }
        newcap *= 2;
    }
    if (e->data == e->inline_buf) {
        p = PyMem_Malloc((size_t)newcap);
        if (p != NULL) {
            memcpy(p, e->data, (size_t)e->len);
        }
    }
    else {
        p = PyMem_Realloc(e->data, (size_t)newcap);
    }
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    e->data = p;
    e->cap = newcap;
    return 0;
}

static inline int
enc_reserve(Enc *e, Py_ssize_t need)
{
    if (e->cap - e->len >= need) {
        return 0;
    }
    return enc_grow(e, need);
}

static inline int
enc_long(Enc *e, int64_t v)
{
    unsigned char *end;
    if (enc_reserve(e, AVRO_LONG_MAX_BYTES) < 0) {
        return -1;
    }
    end = avro_put_long((unsigned char *)e->data + e->len, v);
    e->len = (Py_ssize_t)((char *)end - e->data);
    return 0;
}

static inline int
enc_raw(Enc *e, const void *src, Py_ssize_t n)
{
    if (enc_reserve(e, n) < 0) {
        return -1;
    }
    if (n > 0) {
        memcpy(e->data + e->len, src, (size_t)n);
    }
    e->len += n;
    return 0;
}

static int
type_error(const char *expected, PyObject *v)
{
    PyErr_Format(PyExc_TypeError, "expected %s, got %.200s", expected,
                 Py_TYPE(v)->tp_name);
    return -1;
}

/* Convert an int (or int subclass such as IntEnum, but not bool). */
static int
as_int64(PyObject *v, int64_t *out, const char *what)
{
    long long x;
    int overflow = 0;
    if (!PyLong_Check(v) || PyBool_Check(v)) {
        return type_error("int", v);
    }
    x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow) {
        PyErr_Format(PyExc_OverflowError,
                     "int value out of range for Avro %s (%s)", what,
                     what[0] == 'l' ? "64-bit" : "32-bit");
        return -1;
    }
    if (x == -1 && PyErr_Occurred()) {
        return -1;
    }
    *out = (int64_t)x;
    return 0;
}

/* Convert a float or an int (not bool). */
static int
as_double(PyObject *v, double *out)
{
    double x;
    if (PyFloat_Check(v)) {
        *out = PyFloat_AS_DOUBLE(v);
        return 0;
    }
    if (!PyLong_Check(v) || PyBool_Check(v)) {
        return type_error("float", v);
    }
    x = PyLong_AsDouble(v);
    if (x == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    *out = x;
    return 0;
}

/* Get a contiguous byte view of bytes / bytearray / memoryview / buffer. */
static int
enc_bytes_like(Enc *e, PyObject *v, Py_ssize_t fixed_size)
{
    const char *p;
    Py_ssize_t n;
    Py_buffer view;
    int r;

    if (PyBytes_Check(v)) {
        p = PyBytes_AS_STRING(v);
        n = PyBytes_GET_SIZE(v);
        view.obj = NULL;
    }
    else if (!PyUnicode_Check(v) && PyObject_CheckBuffer(v)) {
        if (PyObject_GetBuffer(v, &view, PyBUF_SIMPLE) < 0) {
            return -1;
        }
        p = view.buf;
        n = view.len;
    }
    else {
        return type_error("bytes", v);
    }
    if (fixed_size >= 0) {
        if (n != fixed_size) {
            PyErr_Format(PyExc_ValueError,
                         "fixed expects exactly %zd bytes, got %zd",
                         fixed_size, n);
            r = -1;
            goto done;
        }
        r = enc_raw(e, p, n);
    }
    else {
        r = enc_long(e, n);
        if (r == 0) {
            r = enc_raw(e, p, n);
        }
    }
done:
    if (view.obj != NULL) {
        PyBuffer_Release(&view);
    }
    return r;
}

static int enc_value(Enc *e, PyObject *prog, PyObject *v);

static int
enc_string(Enc *e, PyObject *v)
{
    const char *s;
    Py_ssize_t n;
    if (!PyUnicode_Check(v)) {
        return type_error("str", v);
    }
    s = PyUnicode_AsUTF8AndSize(v, &n);
    if (s == NULL) {
        return -1;
    }
    if (enc_long(e, n) < 0) {
        return -1;
    }
    return enc_raw(e, s, n);
}

/* True when a record program has exactly two double fields (PriceSize): its
 * items encode as 16 raw little-endian bytes (see enc_array). */
static int
is_double_pair_prog(PyObject *item_prog)
{
#if PY_BIG_ENDIAN
    (void)item_prog;
    return 0;
#else
    PyObject *fields, *f;
    Py_ssize_t i;
    if (!PyTuple_Check(item_prog) || PyTuple_GET_SIZE(item_prog) < 3 ||
        !PyLong_Check(PyTuple_GET_ITEM(item_prog, 0)) ||
        PyLong_AsLong(PyTuple_GET_ITEM(item_prog, 0)) != OP_RECORD) {
        PyErr_Clear();
        return 0;
    }
    fields = PyTuple_GET_ITEM(item_prog, 2);
    if (!PyTuple_Check(fields) || PyTuple_GET_SIZE(fields) != 2) {
        return 0;
    }
    for (i = 0; i < 2; i++) {
        f = PyTuple_GET_ITEM(fields, i);
        if (!PyTuple_Check(f) || PyTuple_GET_SIZE(f) < 1 || !PyLong_Check(PyTuple_GET_ITEM(f, 0)) ||
            PyLong_AsLong(PyTuple_GET_ITEM(f, 0)) != OP_DOUBLE) {
            PyErr_Clear();
            return 0;
        }
    }
    return 1;
#endif
}

static int
enc_array(Enc *e, PyObject *item_prog, PyObject *v)
{
    PyObject *seq;
    Py_ssize_t n, i;

    if (PyList_CheckExact(v) || PyTuple_CheckExact(v)) {
        Py_INCREF(v);
        seq = v;
    }
    else if (PyUnicode_Check(v) || PyBytes_Check(v) || PyByteArray_Check(v) ||
             PyDict_Check(v)) {
        return type_error("a sequence for array", v);
    }
    else {
        seq = PySequence_Fast(v, "");
        if (seq == NULL) {
            if (PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyErr_Clear();
                return type_error("a sequence for array", v);
            }
            return -1;
        }
    }
    n = PySequence_Fast_GET_SIZE(seq);
    if (n > 0) {
        int pairs = is_double_pair_prog(item_prog);
        if (enc_long(e, n) < 0) {
            goto fail;
        }
        for (i = 0; i < n; i++) {
            PyObject *item;
            int r;
            if (pairs && i < PySequence_Fast_GET_SIZE(seq)) {
                /* Fast path for ladder levels (PriceSize): a 2-tuple of two
                 * floats is 16 little-endian bytes, written in one go.  Any
                 * other item (ints, wrong shapes) takes the general path,
                 * which converts or reports it. */
                item = PySequence_Fast_GET_ITEM(seq, i);
                if (PyTuple_Check(item) && PyTuple_GET_SIZE(item) == 2 &&
                    PyFloat_CheckExact(PyTuple_GET_ITEM(item, 0)) &&
                    PyFloat_CheckExact(PyTuple_GET_ITEM(item, 1))) {
                    double xy[2];
                    xy[0] = PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(item, 0));
                    xy[1] = PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(item, 1));
                    if (enc_raw(e, xy, 16) < 0) {
                        goto fail;
                    }
                    continue;
                }
            }
            /* a list may shrink while encoding (user __hash__/__eq__/__bool__) */
            if (i >= PySequence_Fast_GET_SIZE(seq)) {
                PyErr_SetString(PyExc_RuntimeError,
                                "list changed size during encoding");
                goto fail;
            }
            item = PySequence_Fast_GET_ITEM(seq, i);
            Py_INCREF(item);
            r = enc_value(e, item_prog, item);
            Py_DECREF(item);
            if (r < 0) {
                prefix_index("item", i);
                goto fail;
            }
        }
    }
    if (enc_long(e, 0) < 0) {
        goto fail;
    }
    Py_DECREF(seq);
    return 0;

fail:
    Py_DECREF(seq);
    return -1;
}

static int
enc_map_entry(Enc *e, PyObject *value_prog, PyObject *k, PyObject *val)
{
    if (!PyUnicode_Check(k)) {
        PyErr_Format(PyExc_TypeError, "map keys must be str, got %.200s",
                     Py_TYPE(k)->tp_name);
        return -1;
    }
    if (enc_string(e, k) < 0) {
        prefix_key(k);
        return -1;
    }
    if (enc_value(e, value_prog, val) < 0) {
        prefix_key(k);
        return -1;
    }
    return 0;
}

static int
enc_map(Enc *e, PyObject *value_prog, PyObject *v)
{
    Py_ssize_t n, i;

    if (PyDict_Check(v)) {
        Py_ssize_t it = 0;
        PyObject *k, *val;
        n = PyDict_GET_SIZE(v);
        if (n > 0) {
            if (enc_long(e, n) < 0) {
                return -1;
            }
            i = 0;
            while (PyDict_Next(v, &it, &k, &val)) {
                int r;
                if (i >= n) {
                    break;
                }
                Py_INCREF(k);
                Py_INCREF(val);
                r = enc_map_entry(e, value_prog, k, val);
                Py_DECREF(k);
                Py_DECREF(val);
                if (r < 0) {
                    return -1;
                }
                i++;
            }
            if (i != n || PyDict_GET_SIZE(v) != n) {
                PyErr_SetString(PyExc_RuntimeError,
                                "dict changed size during encoding");
                return -1;
            }
        }
        return enc_long(e, 0);
    }
    if (PyList_Check(v) || PyTuple_Check(v) || PyUnicode_Check(v) ||
        PyBytes_Check(v) || PyByteArray_Check(v) || !PyMapping_Check(v)) {
        return type_error("a mapping for map", v);
    }
    else {
        /* other mappings (MappingProxyType, OrderedDict views, ...) */
        PyObject *items = PyMapping_Items(v);
        if (items == NULL) {
            if (PyErr_ExceptionMatches(PyExc_AttributeError) ||
                PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyErr_Clear();
                return type_error("a mapping for map", v);
            }
            return -1;
        }
        n = PyList_GET_SIZE(items);
        if (n > 0 && enc_long(e, n) < 0) {
            Py_DECREF(items);
            return -1;
        }
        for (i = 0; i < n; i++) {
            PyObject *pair = PyList_GET_ITEM(items, i);
            if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
                PyErr_SetString(PyExc_TypeError,
                                "mapping items() must yield (key, value) pairs");
                Py_DECREF(items);
                return -1;
            }
            if (enc_map_entry(e, value_prog, PyTuple_GET_ITEM(pair, 0),
                              PyTuple_GET_ITEM(pair, 1)) < 0) {
                Py_DECREF(items);
                return -1;
            }
        }
        Py_DECREF(items);
        return enc_long(e, 0);
    }
}

static int
branch_is_null(PyObject *branch, int *is_null)
{
    int op = get_op(branch);
    if (op < 0) {
        return -1;
    }
    *is_null = (op == OP_NULL);
    return 0;
}

static int
enc_union(Enc *e, PyObject *prog, PyObject *v)
{
    PyObject *branches = get_tuple_arg(prog, 1, "union branches must be a tuple");
    PyObject *selector = PyTuple_GET_ITEM(prog, 2);
    Py_ssize_t nb, i, idx = -1;
    int is_null;

    if (branches == NULL) {
        return -1;
    }
    nb = PyTuple_GET_SIZE(branches);
    if (v == Py_None) {
        for (i = 0; i < nb; i++) {
            if (branch_is_null(PyTuple_GET_ITEM(branches, i), &is_null) < 0) {
                return -1;
            }
            if (is_null) {
                idx = i;
                break;
            }
        }
        if (idx < 0) {
            PyErr_SetString(PyExc_TypeError,
                            "got None but the union has no null branch");
            return -1;
        }
    }
    else if (selector == Py_None) {
        for (i = 0; i < nb; i++) {
            if (branch_is_null(PyTuple_GET_ITEM(branches, i), &is_null) < 0) {
                return -1;
            }
            if (!is_null) {
                if (idx >= 0) {
                    invalid_program(prog, "union with several non-null "
                                          "branches needs a selector dict");
                    return -1;
                }
                idx = i;
            }
        }
        if (idx < 0) {
            PyErr_Format(PyExc_TypeError,
                         "expected None for a null-only union, got %.200s",
                         Py_TYPE(v)->tp_name);
            return -1;
        }
    }
    else if (PyDict_Check(selector)) {
        PyObject *r = PyDict_GetItemWithError(selector, (PyObject *)Py_TYPE(v));
        if (r == NULL) {
            if (!PyErr_Occurred()) {
                PyErr_Format(PyExc_TypeError,
                             "no union branch for values of type %.200s",
                             Py_TYPE(v)->tp_name);
            }
            return -1;
        }
        idx = PyLong_AsSsize_t(r);
        if (idx < 0 || idx >= nb) {
            invalid_program(prog, "union selector maps to a bad branch index");
            return -1;
        }
    }
    else {
        invalid_program(prog, "union selector must be None or a dict");
        return -1;
    }
    if (enc_long(e, idx) < 0) {
        return -1;
    }
    return enc_value(e, PyTuple_GET_ITEM(branches, idx), v);
}

static int
enc_record(Enc *e, PyObject *prog, PyObject *v)
{
    PyObject *cls = PyTuple_GET_ITEM(prog, 1);
    PyObject *fields = get_tuple_arg(prog, 2, "record fields must be a tuple");
    Py_ssize_t n, i;

    if (fields == NULL) {
        return -1;
    }
    n = PyTuple_GET_SIZE(fields);
    if (!PyTuple_Check(v)) {
        if (cls != Py_None && PyType_Check(cls)) {
            PyErr_Format(PyExc_TypeError,
                         "expected a tuple / %.200s for record, got %.200s",
                         ((PyTypeObject *)cls)->tp_name, Py_TYPE(v)->tp_name);
            return -1;
        }
        return type_error("a tuple for record", v);
    }
    if (PyTuple_GET_SIZE(v) != n) {
        PyErr_Format(PyExc_ValueError,
                     "record expects a tuple of %zd fields, got %zd", n,
                     PyTuple_GET_SIZE(v));
        return -1;
    }
    for (i = 0; i < n; i++) {
        if (enc_value(e, PyTuple_GET_ITEM(fields, i), PyTuple_GET_ITEM(v, i)) <
            0) {
            prefix_field(cls, i);
            return -1;
        }
    }
    return 0;
}

static int
enc_value(Enc *e, PyObject *prog, PyObject *v)
{
    int op = get_op(prog);
    int r;

    switch (op) {
    case -1:
        return -1;

    case OP_NULL:
        if (v != Py_None) {
            return type_error("None", v);
        }
        return 0;

    case OP_BOOLEAN:
        if (enc_reserve(e, 1) < 0) {
            return -1;
        }
        if (v == Py_True) {
            e->data[e->len++] = 1;
        }
        else if (v == Py_False) {
            e->data[e->len++] = 0;
        }
        else if (PyLong_Check(v)) {
            /* like the pure-Python engine: ints by truthiness */
            int t = PyObject_IsTrue(v);
            if (t < 0) {
                return -1;
            }
            e->data[e->len++] = (char)t;
        }
        else {
            return type_error("bool", v);
        }
        return 0;

    case OP_INT: {
        int64_t x;
        if (as_int64(v, &x, "int") < 0) {
            return -1;
        }
        if (x < INT32_MIN || x > INT32_MAX) {
            PyErr_Format(PyExc_OverflowError,
                         "value %lld out of range for a 32-bit Avro int",
                         (long long)x);
            return -1;
        }
        return enc_long(e, x);
    }

    case OP_LONG: {
        int64_t x;
        if (as_int64(v, &x, "long") < 0) {
            return -1;
        }
        return enc_long(e, x);
    }

    case OP_FLOAT: {
        double x;
        float f;
        if (as_double(v, &x) < 0) {
            return -1;
        }
        f = (float)x;
        if (Py_IS_INFINITY(f) && !Py_IS_INFINITY(x)) {
            /* same rule as struct.pack("<f") / the pure-Python engine */
            PyErr_Format(PyExc_OverflowError,
                         "%R out of range for an Avro float", v);
            return -1;
        }
        if (enc_reserve(e, 4) < 0) {
            return -1;
        }
#if PY_BIG_ENDIAN
        {
            unsigned char tmp[4];
            int k;
            memcpy(tmp, &f, 4);
            for (k = 0; k < 4; k++) {
                e->data[e->len + k] = (char)tmp[3 - k];
            }
        }
#else
        memcpy(e->data + e->len, &f, 4);
#endif
        e->len += 4;
        return 0;
    }

    case OP_DOUBLE: {
        double x;
        if (as_double(v, &x) < 0) {
            return -1;
        }
        if (enc_reserve(e, 8) < 0) {
            return -1;
        }
        avro_put_double((unsigned char *)e->data + e->len, x);
        e->len += 8;
        return 0;
    }

    case OP_BYTES:
        return enc_bytes_like(e, v, -1);

    case OP_STRING:
        return enc_string(e, v);

    case OP_ENUM: {
        PyObject *symbols = get_tuple_arg(prog, 1, "enum symbols must be a tuple");
        PyObject *index = PyTuple_GET_ITEM(prog, 2);
        PyObject *found;
        Py_ssize_t idx;
        if (symbols == NULL) {
            return -1;
        }
        if (!PyDict_Check(index)) {
            invalid_program(prog, "enum index must be a dict");
            return -1;
        }
        found = PyDict_GetItemWithError(index, v);
        if (found == NULL) {
            /* unknown or unhashable: ValueError, like the Python engine */
            if (PyErr_Occurred()) {
                if (!PyErr_ExceptionMatches(PyExc_TypeError)) {
                    return -1;
                }
                PyErr_Clear();
            }
            PyErr_Format(PyExc_ValueError,
                         "unknown enum symbol %.200R (expected one of %.200R)",
                         v, symbols);
            return -1;
        }
        idx = PyLong_AsSsize_t(found);
        if (idx < 0 || idx >= PyTuple_GET_SIZE(symbols)) {
            invalid_program(prog, "enum index dict maps to a bad index");
            return -1;
        }
        return enc_long(e, idx);
    }

    case OP_FIXED: {
        Py_ssize_t size = PyLong_AsSsize_t(PyTuple_GET_ITEM(prog, 1));
        if (size < 0) {
            invalid_program(prog, "fixed size must be a non-negative int");
            return -1;
        }
        return enc_bytes_like(e, v, size);
    }

    case OP_ARRAY:
    case OP_MAP:
    case OP_UNION:
    case OP_RECORD:
        break;

    default:
        invalid_program(prog, "unknown opcode");
        return -1;
    }

    if (++e->depth > MAX_DEPTH) {
        e->depth--;
        PyErr_SetString(PyExc_RecursionError,
                        "avrovm program nested too deeply");
        return -1;
    }
    switch (op) {
    case OP_ARRAY:
        r = enc_array(e, PyTuple_GET_ITEM(prog, 1), v);
        break;
    case OP_MAP:
        r = enc_map(e, PyTuple_GET_ITEM(prog, 1), v);
        break;
    case OP_UNION:
        r = enc_union(e, prog, v);
        break;
    default: /* OP_RECORD */
        r = enc_record(e, prog, v);
        break;
    }
    e->depth--;
    return r;
}

/* ------------------------------------------------------------------------ */
/* Argument helpers                                                         */
/* ------------------------------------------------------------------------ */

/* Minimal FASTCALL argument parser: fills out[0..nmax) (NULL if absent). */
static int
parse_args(const char *fname, PyObject *const *args, Py_ssize_t nargs,
           PyObject *kwnames, const char *const *names, Py_ssize_t nreq,
           Py_ssize_t nmax, PyObject **out)
{
    Py_ssize_t i, j, nkw;
    if (nargs > nmax) {
        PyErr_Format(PyExc_TypeError,
                     "%s() takes at most %zd positional arguments (%zd given)",
                     fname, nmax, nargs);
        return -1;
    }
    for (i = 0; i < nmax; i++) {
        out[i] = i < nargs ? args[i] : NULL;
    }
    nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (j = 0; j < nkw; j++) {
        PyObject *kw = PyTuple_GET_ITEM(kwnames, j);
        int matched = 0;
        for (i = 0; i < nmax; i++) {
            if (PyUnicode_CompareWithASCIIString(kw, names[i]) == 0) {
                if (out[i] != NULL) {
                    PyErr_Format(PyExc_TypeError,
                                 "%s() got multiple values for argument '%s'",
                                 fname, names[i]);
                    return -1;
                }
                out[i] = args[nargs + j];
                matched = 1;
                break;
            }
        }
        if (!matched) {
            PyErr_Format(PyExc_TypeError,
                         "%s() got an unexpected keyword argument '%U'", fname,
                         kw);
            return -1;
        }
    }
    for (i = 0; i < nreq; i++) {
        if (out[i] == NULL) {
            PyErr_Format(PyExc_TypeError,
                         "%s() missing required argument '%s' (pos %zd)",
                         fname, names[i], i + 1);
            return -1;
        }
    }
    return 0;
}

static int
get_buffer(PyObject *obj, Py_buffer *view)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) < 0) {
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError,
                         "expected a bytes-like object, got %.200s",
                         Py_TYPE(obj)->tp_name);
        }
        return -1;
    }
    return 0;
}

static int
get_pos(PyObject *obj, Py_ssize_t len, Py_ssize_t *pos)
{
    Py_ssize_t p;
    if (obj == NULL) {
        *pos = 0;
        return 0;
    }
    p = PyNumber_AsSsize_t(obj, PyExc_OverflowError);
    if (p == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (p < 0 || p > len) {
        PyErr_Format(PyExc_ValueError,
                     "pos %zd out of range for a buffer of %zd bytes", p, len);
        return -1;
    }
    *pos = p;
    return 0;
}

static PyObject *
result_pair(PyObject *value /* stolen */, Py_ssize_t pos)
{
    PyObject *p, *t;
    if (value == NULL) {
        return NULL;
    }
    p = PyLong_FromSsize_t(pos);
    if (p == NULL) {
        Py_DECREF(value);
        return NULL;
    }
    t = PyTuple_New(2);
    if (t == NULL) {
        Py_DECREF(value);
        Py_DECREF(p);
        return NULL;
    }
    PyTuple_SET_ITEM(t, 0, value);
    PyTuple_SET_ITEM(t, 1, p);
    return t;
}

static int
append_to_bytearray(PyObject *out, Enc *e)
{
    Py_ssize_t old;
    if (e->len == 0) {
        return 0;
    }
    old = PyByteArray_GET_SIZE(out);
    if (e->len > PY_SSIZE_T_MAX - old) {
        PyErr_NoMemory();
        return -1;
    }
    if (PyByteArray_Resize(out, old + e->len) < 0) {
        return -1;
    }
    memcpy(PyByteArray_AS_STRING(out) + old, e->data, (size_t)e->len);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Module functions                                                         */
/* ------------------------------------------------------------------------ */

PyDoc_STRVAR(decode_doc,
"decode(program, buf, pos=0) -> (value, new_pos)\n\n"
"Decode one Avro binary value described by program from the bytes-like\n"
"object buf, starting at byte offset pos.  Raises ValueError (mentioning\n"
"the byte position) on truncated or malformed input.");

static PyObject *
avrovm_decode(PyObject *module, PyObject *const *args,
              Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"program", "buf", "pos"};
    PyObject *a[3], *value;
    Py_buffer view;
    Dec d;

    if (kwnames == NULL && nargs == 2) {
        a[0] = args[0];
        a[1] = args[1];
        a[2] = NULL;
    }
    else if (parse_args("decode", args, nargs, kwnames, names, 2, 3, a) < 0) {
        return NULL;
    }
    if (PyBytes_CheckExact(a[1])) {
        /* immutable and kept alive by the caller: no buffer export needed */
        view.obj = NULL;
        view.buf = PyBytes_AS_STRING(a[1]);
        view.len = PyBytes_GET_SIZE(a[1]);
    }
    else if (get_buffer(a[1], &view) < 0) {
        return NULL;
    }
    d.buf = (const unsigned char *)view.buf;
    d.len = view.len;
    d.depth = 0;
    d.pairs = ((ModState *)PyModule_GetState(module))->pairs;
    if (get_pos(a[2], view.len, &d.pos) < 0) {
        value = NULL;
    }
    else {
        value = dec_value(&d, a[0]);
    }
    if (view.obj != NULL) {
        PyBuffer_Release(&view);
    }
    return result_pair(value, d.pos);
}

PyDoc_STRVAR(decode_many_doc,
"decode_many(program, buf, pos, count) -> (list, new_pos)\n\n"
"Decode count consecutive values (e.g. the objects of an Avro container\n"
"block) starting at byte offset pos.");

static PyObject *
avrovm_decode_many(PyObject *module, PyObject *const *args,
                   Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"program", "buf", "pos", "count"};
    PyObject *a[4], *list = NULL;
    Py_buffer view;
    Py_ssize_t count, i, at;
    Dec d;

    if (parse_args("decode_many", args, nargs, kwnames, names, 4, 4, a) < 0) {
        return NULL;
    }
    count = PyNumber_AsSsize_t(a[3], PyExc_OverflowError);
    if (count == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (count < 0) {
        PyErr_Format(PyExc_ValueError, "count must be >= 0, got %zd", count);
        return NULL;
    }
    if (get_buffer(a[1], &view) < 0) {
        return NULL;
    }
    d.buf = (const unsigned char *)view.buf;
    d.len = view.len;
    d.depth = 0;
    d.pairs = ((ModState *)PyModule_GetState(module))->pairs;
    if (get_pos(a[2], view.len, &d.pos) < 0) {
        goto fail;
    }
    at = d.pos;
    /* count comes from untrusted container headers: bound it like a block */
    if (check_block_count(&d, a[0], (int64_t)count, 0, at, 0) < 0) {
        goto fail;
    }
    list = PyList_New(count);
    if (list == NULL) {
        goto fail;
    }
    for (i = 0; i < count; i++) {
        PyObject *v = dec_value(&d, a[0]);
        if (v == NULL) {
            prefix_index("value", i);
            goto fail;
        }
        PyList_SET_ITEM(list, i, v);
    }
    PyBuffer_Release(&view);
    return result_pair(list, d.pos);

fail:
    Py_XDECREF(list);
    PyBuffer_Release(&view);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* decode_columns: a container block of flat records straight to columns    */
/* ------------------------------------------------------------------------ */

/*
 * The tape's block records are TapeEntry {key: [null, string], event: union
 * of every event type}.  Analytics want Arrow columns; building one Python
 * object per value only to have pyarrow take them apart again costs ~10x the
 * decode.  When every entry of a block holds the same "flat" record (fields
 * of primitive types, enums, or [null, primitive] unions), decode_columns
 * writes the values straight into Arrow-layout buffers (bytes objects that
 * Python wraps with pa.Array.from_buffers, no copy):
 *
 *   long/int/double/float   (validity, data)  data = int64/int32/f64/f32 LE
 *   boolean                 (validity, data)  data = Arrow bitmap (LSB first)
 *   enum                    (validity, data)  data = int32 symbol indices
 *   string/bytes            (validity, offsets, data)  int32 offsets (n + 1)
 *
 * validity is None when the column has no nulls, else an Arrow validity
 * bitmap; null slots hold zeros (fixed width) or repeat the offset (strings).
 * Anything else (nested fields, mixed types in the block, a string column
 * that could overflow int32 offsets) returns None and the caller takes the
 * general path.  Malformed input raises ValueError with the byte position;
 * the checks are those of dec_value (booleans 0/1, ints in 32 bits, enum and
 * union indices in range, strict UTF-8), so both paths accept the same data.
 * Little-endian hosts only (the only ones Arrow's buffers match without
 * byte swapping); on others decode_columns always returns None.
 */

typedef struct {
    int op;             /* opcode of the value (the non-null union branch) */
    int nullable;       /* a [null, X] union */
    int64_t null_branch; /* its null branch index (0 or 1) */
    Py_ssize_t width;   /* bytes per value in data (0: string/bytes, -1: bit) */
    Py_ssize_t nsymbols; /* enum symbol count */
    Py_ssize_t nulls;
    PyObject *validity; /* bytes (nullable columns only) */
    PyObject *data;     /* bytes: values, or offsets for string/bytes */
    PyObject *heap;     /* bytes: string/bytes payload, grown as it fills */
    Py_ssize_t heap_len;
    Py_ssize_t heap_max; /* the input left: the payload never exceeds it */
} Col;

/* Fill c's type description from a program node: 1 if flat, 0 if not, -1 on
 * an invalid program. */
static int
col_classify(PyObject *prog, Col *c)
{
    int op = get_op(prog);
    if (op < 0) {
        return -1;
    }
    if (op == OP_UNION) {
        PyObject *branches =
            get_tuple_arg(prog, 1, "union branches must be a tuple");
        int op0, op1;
        if (branches == NULL) {
            return -1;
        }
        if (PyTuple_GET_SIZE(branches) != 2) {
            return 0;
        }
        op0 = get_op(PyTuple_GET_ITEM(branches, 0));
        op1 = get_op(PyTuple_GET_ITEM(branches, 1));
        if (op0 < 0 || op1 < 0) {
            return -1;
        }
        if ((op0 == OP_NULL) == (op1 == OP_NULL)) {
            return 0; /* [null, null] or two non-null branches */
        }
        c->nullable = 1;
        c->null_branch = op0 == OP_NULL ? 0 : 1;
        prog = PyTuple_GET_ITEM(branches, op0 == OP_NULL ? 1 : 0);
        op = op0 == OP_NULL ? op1 : op0;
    }
    c->op = op;
    switch (op) {
    case OP_BOOLEAN:
        c->width = -1;
        return 1;
    case OP_INT:
    case OP_FLOAT:
        c->width = 4;
        return 1;
    case OP_LONG:
    case OP_DOUBLE:
        c->width = 8;
        return 1;
    case OP_BYTES:
    case OP_STRING:
        c->width = 0;
        return 1;
    case OP_ENUM: {
        PyObject *symbols =
            get_tuple_arg(prog, 1, "enum symbols must be a tuple");
        if (symbols == NULL) {
            return -1;
        }
        c->width = 4;
        c->nsymbols = PyTuple_GET_SIZE(symbols);
        return 1;
    }
    default:
        return 0;
    }
}

/* Allocate c's buffers for n rows.  The payload of strings is bounded by the
 * input left (each payload byte is an input byte) but starts small and grows
 * (col_heap_room): a block's strings are a fraction of it, and allocating
 * the whole rest of the input per string column cost columns x block. */
static int
col_alloc(Col *c, Py_ssize_t n, Py_ssize_t input_left)
{
    Py_ssize_t size;
    if (c->nullable) {
        c->validity = PyBytes_FromStringAndSize(NULL, (n + 7) / 8);
        if (c->validity == NULL) {
            return -1;
        }
        memset(PyBytes_AS_STRING(c->validity), 0, (size_t)((n + 7) / 8));
    }
    if (c->width < 0) {
        size = (n + 7) / 8;
    }
    else if (c->width == 0) {
        size = (n + 1) * 4;
    }
    else {
        size = n * c->width;
    }
    c->data = PyBytes_FromStringAndSize(NULL, size);
    if (c->data == NULL) {
        return -1;
    }
    if (c->width < 0) {
        memset(PyBytes_AS_STRING(c->data), 0, (size_t)size);
    }
    else if (c->width == 0) {
        memset(PyBytes_AS_STRING(c->data), 0, 4); /* offsets[0] */
        c->heap_max = input_left;
        c->heap = PyBytes_FromStringAndSize(NULL, Py_MIN(input_left, 16 * n));
        if (c->heap == NULL) {
            return -1;
        }
    }
    return 0;
}

static void
col_clear(Col *c)
{
    Py_CLEAR(c->validity);
    Py_CLEAR(c->data);
    Py_CLEAR(c->heap);
}

/* Room for `more` payload bytes in c's heap (doubling, up to heap_max). */
static int
col_heap_room(Col *c, Py_ssize_t more)
{
    Py_ssize_t cap = PyBytes_GET_SIZE(c->heap), need = c->heap_len + more;
    if (need <= cap) {
        return 0;
    }
    cap = cap > c->heap_max / 2 ? c->heap_max : Py_MAX(2 * cap, need);
    if (cap < need) {
        /* cannot happen: payload bytes are input bytes (heap_max) */
        PyErr_SetString(PyExc_SystemError, "decode_columns: string payload exceeds the input");
        return -1;
    }
    return _PyBytes_Resize(&c->heap, cap); /* on failure c->heap is freed, set to NULL */
}

/* Length of the valid UTF-8 prefix of s[0..n) (n if all valid), with the
 * same rules as CPython's strict decoder: no overlong forms, no surrogates,
 * nothing above U+10FFFF. */
static Py_ssize_t
utf8_valid_prefix(const unsigned char *s, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) {
            /* ASCII run: 8 bytes at a time */
            while (i + 8 <= n) {
                uint64_t w;
                memcpy(&w, s + i, 8);
                if (w & UINT64_C(0x8080808080808080)) {
                    break;
                }
                i += 8;
            }
            while (i < n && s[i] < 0x80) {
                i++;
            }
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) {
            if (i + 1 >= n || (s[i + 1] & 0xC0) != 0x80) {
                return i;
            }
            i += 2;
        }
        else if (c >= 0xE0 && c <= 0xEF) {
            unsigned char c1;
            if (i + 2 >= n) {
                return i;
            }
            c1 = s[i + 1];
            if ((c1 & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80 ||
                (c == 0xE0 && c1 < 0xA0) ||  /* overlong */
                (c == 0xED && c1 >= 0xA0)) { /* surrogate */
                return i;
            }
            i += 3;
        }
        else if (c >= 0xF0 && c <= 0xF4) {
            unsigned char c1;
            if (i + 3 >= n) {
                return i;
            }
            c1 = s[i + 1];
            if ((c1 & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80 ||
                (s[i + 3] & 0xC0) != 0x80 ||
                (c == 0xF0 && c1 < 0x90) ||  /* overlong */
                (c == 0xF4 && c1 >= 0x90)) { /* above U+10FFFF */
                return i;
            }
            i += 4;
        }
        else {
            return i;
        }
    }
    return n;
}

/* Decode one value of column c into row i. */
static int
col_decode(Dec *d, Col *c, Py_ssize_t i)
{
    unsigned char *out;
    Py_ssize_t start = d->pos;

    if (c->nullable) {
        int64_t branch;
        if (dec_long(d, &branch) < 0) {
            return -1;
        }
        if (branch != 0 && branch != 1) {
            PyErr_Format(PyExc_ValueError,
                         "union branch index %lld at byte %zd out of range "
                         "(2 branches)",
                         (long long)branch, start);
            return -1;
        }
        if (branch == c->null_branch) {
            c->nulls++;
            out = (unsigned char *)PyBytes_AS_STRING(c->data);
            if (c->width > 0) {
                memset(out + i * c->width, 0, (size_t)c->width);
            }
            else if (c->width == 0) {
                int32_t *offs = (int32_t *)(void *)out;
                offs[i + 1] = offs[i];
            }
            /* booleans: the bitmap was zeroed at allocation */
            return 0;
        }
        ((unsigned char *)PyBytes_AS_STRING(c->validity))[i >> 3] |=
            (unsigned char)(1u << (i & 7));
        start = d->pos;
    }
    out = (unsigned char *)PyBytes_AS_STRING(c->data);
    switch (c->op) {
    case OP_BOOLEAN: {
        unsigned char b;
        if (d->pos >= d->len) {
            return dec_truncated(d, 1, "boolean");
        }
        b = d->buf[d->pos];
        if (b > 1) {
            PyErr_Format(PyExc_ValueError,
                         "invalid boolean byte 0x%02x at byte %zd", b, d->pos);
            return -1;
        }
        d->pos++;
        out[i >> 3] |= (unsigned char)(b << (i & 7));
        return 0;
    }
    case OP_INT: {
        int64_t v;
        int32_t v32;
        if (dec_long(d, &v) < 0) {
            return -1;
        }
        if (v < INT32_MIN || v > INT32_MAX) {
            PyErr_Format(PyExc_ValueError,
                         "int value %lld at byte %zd does not fit in 32 bits",
                         (long long)v, start);
            return -1;
        }
        v32 = (int32_t)v;
        memcpy(out + i * 4, &v32, 4);
        return 0;
    }
    case OP_LONG: {
        int64_t v;
        if (dec_long(d, &v) < 0) {
            return -1;
        }
        memcpy(out + i * 8, &v, 8);
        return 0;
    }
    case OP_FLOAT:
    case OP_DOUBLE:
        /* Avro and Arrow are both little-endian IEEE 754: copy the bytes */
        if (d->len - d->pos < c->width) {
            return dec_truncated(d, c->width,
                                 c->op == OP_FLOAT ? "float" : "double");
        }
        memcpy(out + i * c->width, d->buf + d->pos, (size_t)c->width);
        d->pos += c->width;
        return 0;
    case OP_ENUM: {
        int64_t idx;
        int32_t i32;
        if (dec_long(d, &idx) < 0) {
            return -1;
        }
        if (idx < 0 || idx >= (int64_t)c->nsymbols) {
            PyErr_Format(PyExc_ValueError,
                         "enum index %lld at byte %zd out of range (%zd "
                         "symbols)",
                         (long long)idx, start, c->nsymbols);
            return -1;
        }
        i32 = (int32_t)idx;
        memcpy(out + i * 4, &i32, 4);
        return 0;
    }
    default: { /* OP_STRING, OP_BYTES */
        Py_ssize_t n;
        int32_t *offs = (int32_t *)(void *)out;
        if (dec_length(d, &n, c->op == OP_STRING ? "string" : "bytes") < 0) {
            return -1;
        }
        if (c->op == OP_STRING) {
            Py_ssize_t ok = utf8_valid_prefix(d->buf + d->pos, n);
            if (ok != n) {
                PyErr_Format(PyExc_ValueError,
                             "invalid UTF-8 in string at byte %zd (byte %zd)",
                             start, d->pos + ok);
                return -1;
            }
        }
        /* heap_len + n <= bytes consumed so far <= heap_max (the input
         * left at the start), and that is < 2**31 (checked) */
        if (col_heap_room(c, n) < 0) {
            return -1;
        }
        memcpy(PyBytes_AS_STRING(c->heap) + c->heap_len, d->buf + d->pos,
               (size_t)n);
        c->heap_len += n;
        d->pos += n;
        offs[i + 1] = (int32_t)c->heap_len;
        return 0;
    }
    }
}

/* The finished column as a tuple (validity or None, data[, payload]). */
static PyObject *
col_finish(Col *c)
{
    PyObject *validity = c->nulls ? c->validity : Py_None;
    if (c->width == 0) {
        if (_PyBytes_Resize(&c->heap, c->heap_len) < 0) {
            return NULL; /* c->heap was freed and set to NULL */
        }
        return PyTuple_Pack(3, validity, c->data, c->heap);
    }
    return PyTuple_Pack(2, validity, c->data);
}

/* Read an entry's key and event branch index (the branch's record follows). */
static int
entry_head(Dec *d, Col *key, Py_ssize_t i, PyObject *entry_cls,
           Py_ssize_t nbranches, int64_t *branch)
{
    Py_ssize_t start;
    if (col_decode(d, key, i) < 0) {
        prefix_field(entry_cls, 0);
        return -1;
    }
    start = d->pos;
    if (dec_long(d, branch) < 0) {
        prefix_field(entry_cls, 1);
        return -1;
    }
    if (*branch < 0 || *branch >= (int64_t)nbranches) {
        PyErr_Format(PyExc_ValueError,
                     "union branch index %lld at byte %zd out of range "
                     "(%zd branches)",
                     (long long)*branch, start, nbranches);
        prefix_field(entry_cls, 1);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(decode_columns_doc,
"decode_columns(entry_program, buf, pos, count)\n"
"    -> (branch, key_column, [field_columns], new_pos) or None\n\n"
"Decode count TapeEntry records {key: [null, string], event: union} whose\n"
"events are all the same flat record branch into Arrow-layout column\n"
"buffers (see the comment in _avrovm.c).  Returns None when the block does\n"
"not qualify (mixed branches, nested fields); raises ValueError, naming the\n"
"byte position, on malformed input.");

static PyObject *
avrovm_decode_columns(PyObject *module, PyObject *const *args,
                      Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"entry_program", "buf", "pos",
                                        "count"};
    PyObject *a[4], *entry_fields, *branches, *record = NULL, *rec_cls = NULL;
    PyObject *result = NULL, *keycol = NULL, *list = NULL, *tmp;
    Py_buffer view;
    Py_ssize_t count, i, j, nfields = 0, at, left;
    Col key;
    Col *cols = NULL;
    int64_t first = -1, branch;
    int flat;
    Dec d;

    if (parse_args("decode_columns", args, nargs, kwnames, names, 4, 4, a) <
        0) {
        return NULL;
    }
    count = PyNumber_AsSsize_t(a[3], PyExc_OverflowError);
    if (count == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (count < 0) {
        PyErr_Format(PyExc_ValueError, "count must be >= 0, got %zd", count);
        return NULL;
    }
    /* the entry program: (RECORD, cls, (key_prog, (UNION, branches, _))) */
    if (get_op(a[0]) != OP_RECORD) {
        if (!PyErr_Occurred()) {
            invalid_program(a[0], "decode_columns needs a record program");
        }
        return NULL;
    }
    entry_fields = get_tuple_arg(a[0], 2, "record fields must be a tuple");
    if (entry_fields == NULL) {
        return NULL;
    }
    if (PyTuple_GET_SIZE(entry_fields) != 2) {
        invalid_program(a[0], "decode_columns needs a {key, event} record");
        return NULL;
    }
    tmp = PyTuple_GET_ITEM(entry_fields, 1);
    if (get_op(tmp) != OP_UNION) {
        if (!PyErr_Occurred()) {
            invalid_program(a[0], "the entry's event must be a union");
        }
        return NULL;
    }
    branches = get_tuple_arg(tmp, 1, "union branches must be a tuple");
    if (branches == NULL) {
        return NULL;
    }
    memset(&key, 0, sizeof key);
    flat = col_classify(PyTuple_GET_ITEM(entry_fields, 0), &key);
    if (flat < 0) {
        return NULL;
    }
#if PY_BIG_ENDIAN
    flat = 0;
#endif
    if (!flat || count == 0) {
        Py_RETURN_NONE;
    }
    if (get_buffer(a[1], &view) < 0) {
        return NULL;
    }
    d.buf = (const unsigned char *)view.buf;
    d.len = view.len;
    d.depth = 0;
    d.pairs = ((ModState *)PyModule_GetState(module))->pairs;
    if (get_pos(a[2], view.len, &d.pos) < 0) {
        goto done;
    }
    at = d.pos;
    left = d.len - d.pos;
    if (left > INT32_MAX) {
        /* string payloads could overflow Arrow's int32 offsets */
        result = Py_NewRef(Py_None);
        goto done;
    }
    /* count comes from an untrusted block header: every entry takes at
     * least two bytes (key branch, event branch) */
    if (check_block_count(&d, a[0], (int64_t)count, 0, at, 0) < 0 ||
        col_alloc(&key, count, left) < 0) {
        goto done;
    }
    rec_cls = PyTuple_GET_ITEM(a[0], 1);
    for (i = 0; i < count; i++) {
        if (entry_head(&d, &key, i, rec_cls, PyTuple_GET_SIZE(branches),
                       &branch) < 0) {
            prefix_index("value", i);
            goto done;
        }
        if (i == 0) {
            /* the first entry's branch decides the columns */
            PyObject *fields;
            first = branch;
            record = PyTuple_GET_ITEM(branches, (Py_ssize_t)branch);
            flat = get_op(record);
            if (flat < 0) {
                goto done;
            }
            if (flat != OP_RECORD) {
                result = Py_NewRef(Py_None);
                goto done;
            }
            fields = get_tuple_arg(record, 2, "record fields must be a tuple");
            if (fields == NULL) {
                goto done;
            }
            nfields = PyTuple_GET_SIZE(fields);
            cols = PyMem_Calloc((size_t)(nfields ? nfields : 1), sizeof(Col));
            if (cols == NULL) {
                PyErr_NoMemory();
                goto done;
            }
            for (j = 0; j < nfields; j++) {
                flat = col_classify(PyTuple_GET_ITEM(fields, j), &cols[j]);
                if (flat < 0) {
                    goto done;
                }
                if (!flat) {
                    result = Py_NewRef(Py_None);
                    goto done;
                }
            }
            for (j = 0; j < nfields; j++) {
                if (col_alloc(&cols[j], count, left) < 0) {
                    goto done;
                }
            }
        }
        else if (branch != first) {
            /* a mixed block: the caller's general path splits it by type
             * (cheaper than returning a partial result it must resume) */
            result = Py_NewRef(Py_None);
            goto done;
        }
        for (j = 0; j < nfields; j++) {
            if (col_decode(&d, &cols[j], i) < 0) {
                prefix_field(PyTuple_GET_ITEM(record, 1), j);
                prefix_field(rec_cls, 1);
                prefix_index("value", i);
                goto done;
            }
        }
    }
    keycol = col_finish(&key);
    list = PyList_New(nfields);
    if (keycol == NULL || list == NULL) {
        goto done;
    }
    for (j = 0; j < nfields; j++) {
        PyObject *c = col_finish(&cols[j]);
        if (c == NULL) {
            goto done;
        }
        PyList_SET_ITEM(list, j, c);
    }
    result = Py_BuildValue("LOOn", (long long)first, keycol, list, d.pos);

done:
    Py_XDECREF(keycol);
    Py_XDECREF(list);
    col_clear(&key);
    if (cols != NULL) {
        for (j = 0; j < nfields; j++) {
            col_clear(&cols[j]);
        }
        PyMem_Free(cols);
    }
    PyBuffer_Release(&view);
    return result;
}

PyDoc_STRVAR(encode_doc,
"encode(program, value) -> bytes\n\n"
"Encode value as an Avro binary body described by program.");

static PyObject *
avrovm_encode(PyObject *Py_UNUSED(module), PyObject *const *args,
              Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"program", "value"};
    PyObject *a[2], *res;
    Enc e;

    if (kwnames == NULL && nargs == 2) {
        a[0] = args[0];
        a[1] = args[1];
    }
    else if (parse_args("encode", args, nargs, kwnames, names, 2, 2, a) < 0) {
        return NULL;
    }
    enc_init(&e);
    if (enc_value(&e, a[0], a[1]) < 0) {
        enc_free(&e);
        return NULL;
    }
    res = PyBytes_FromStringAndSize(e.data, e.len);
    enc_free(&e);
    return res;
}

PyDoc_STRVAR(encode_into_doc,
"encode_into(program, value, out) -> None\n\n"
"Append the Avro binary encoding of value to the bytearray out.  Nothing\n"
"is appended if encoding fails.");

static PyObject *
avrovm_encode_into(PyObject *Py_UNUSED(module), PyObject *const *args,
                   Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"program", "value", "out"};
    PyObject *a[3];
    Enc e;

    if (kwnames == NULL && nargs == 3) {
        a[0] = args[0];
        a[1] = args[1];
        a[2] = args[2];
    }
    else if (parse_args("encode_into", args, nargs, kwnames, names, 3, 3, a) <
             0) {
        return NULL;
    }
    if (!PyByteArray_Check(a[2])) {
        PyErr_Format(PyExc_TypeError, "out must be a bytearray, got %.200s",
                     Py_TYPE(a[2])->tp_name);
        return NULL;
    }
    enc_init(&e);
    if (enc_value(&e, a[0], a[1]) < 0 || append_to_bytearray(a[2], &e) < 0) {
        enc_free(&e);
        return NULL;
    }
    enc_free(&e);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(encode_many_doc,
"encode_many(program, values, out) -> None\n\n"
"Append the encodings of every value in the iterable values to the\n"
"bytearray out.  Nothing is appended if any value fails to encode.");

static PyObject *
avrovm_encode_many(PyObject *Py_UNUSED(module), PyObject *const *args,
                   Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"program", "values", "out"};
    PyObject *a[3], *seq;
    Py_ssize_t n, i;
    Enc e;

    if (parse_args("encode_many", args, nargs, kwnames, names, 3, 3, a) < 0) {
        return NULL;
    }
    if (!PyByteArray_Check(a[2])) {
        PyErr_Format(PyExc_TypeError, "out must be a bytearray, got %.200s",
                     Py_TYPE(a[2])->tp_name);
        return NULL;
    }
    seq = PySequence_Fast(a[1], "values must be iterable");
    if (seq == NULL) {
        return NULL;
    }
    enc_init(&e);
    n = PySequence_Fast_GET_SIZE(seq);
    for (i = 0; i < n; i++) {
        PyObject *item;
        int r;
        if (i >= PySequence_Fast_GET_SIZE(seq)) {
            PyErr_SetString(PyExc_RuntimeError,
                            "list changed size during encoding");
            goto fail;
        }
        item = PySequence_Fast_GET_ITEM(seq, i);
        Py_INCREF(item);
        r = enc_value(&e, a[0], item);
        Py_DECREF(item);
        if (r < 0) {
            prefix_index("value", i);
            goto fail;
        }
    }
    if (append_to_bytearray(a[2], &e) < 0) {
        goto fail;
    }
    Py_DECREF(seq);
    enc_free(&e);
    Py_RETURN_NONE;

fail:
    Py_DECREF(seq);
    enc_free(&e);
    return NULL;
}

static PyMethodDef avrovm_methods[] = {
    {"decode", (PyCFunction)(void (*)(void))avrovm_decode,
     METH_FASTCALL | METH_KEYWORDS, decode_doc},
    {"decode_many", (PyCFunction)(void (*)(void))avrovm_decode_many,
     METH_FASTCALL | METH_KEYWORDS, decode_many_doc},
    {"decode_columns", (PyCFunction)(void (*)(void))avrovm_decode_columns,
     METH_FASTCALL | METH_KEYWORDS, decode_columns_doc},
    {"encode", (PyCFunction)(void (*)(void))avrovm_encode,
     METH_FASTCALL | METH_KEYWORDS, encode_doc},
    {"encode_into", (PyCFunction)(void (*)(void))avrovm_encode_into,
     METH_FASTCALL | METH_KEYWORDS, encode_into_doc},
    {"encode_many", (PyCFunction)(void (*)(void))avrovm_encode_many,
     METH_FASTCALL | METH_KEYWORDS, encode_many_doc},
    {NULL, NULL, 0, NULL},
};

static int
avrovm_exec(PyObject *module)
{
    ModState *st = (ModState *)PyModule_GetState(module);
    int i;
    st->pairs = PyMem_Calloc(PAIR_CACHE_SIZE, sizeof(PairEntry));
    if (st->pairs == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (i = 0; i < OP_COUNT; i++) {
        if (PyModule_AddIntConstant(module, op_names[i], i) < 0) {
            return -1;
        }
    }
    if (PyModule_AddIntConstant(module, "MAX_DEPTH", MAX_DEPTH) < 0) {
        return -1;
    }
    return 0;
}

static int
avrovm_traverse(PyObject *module, visitproc visit, void *arg)
{
    ModState *st = (ModState *)PyModule_GetState(module);
    size_t i;
    if (st != NULL && st->pairs != NULL) {
        for (i = 0; i < PAIR_CACHE_SIZE; i++) {
            Py_VISIT(st->pairs[i].obj);
        }
    }
    return 0;
}

static int
avrovm_clear(PyObject *module)
{
    ModState *st = (ModState *)PyModule_GetState(module);
    size_t i;
    if (st != NULL && st->pairs != NULL) {
        for (i = 0; i < PAIR_CACHE_SIZE; i++) {
            Py_CLEAR(st->pairs[i].obj);
        }
    }
    return 0;
}

static void
avrovm_free(void *module)
{
    ModState *st = (ModState *)PyModule_GetState((PyObject *)module);
    avrovm_clear((PyObject *)module);
    if (st != NULL) {
        PyMem_Free(st->pairs);
        st->pairs = NULL;
    }
}

/* No process-global state (the pair cache is in the module's state), so every
 * interpreter, including one with its own GIL, can import its own instance. */
static PyModuleDef_Slot avrovm_slots[] = {
    {Py_mod_exec, (void *)avrovm_exec},
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
    {0, NULL},
};

PyDoc_STRVAR(module_doc,
"Avro binary encoding/decoding driven by precompiled schema programs.\n\n"
"A program is a nested tuple whose first element is an opcode (NULL=0,\n"
"BOOLEAN=1, INT=2, LONG=3, FLOAT=4, DOUBLE=5, BYTES=6, STRING=7, ENUM=8,\n"
"FIXED=9, ARRAY=10, MAP=11, UNION=12, RECORD=13).");

static struct PyModuleDef avrovm_module = {
    PyModuleDef_HEAD_INIT,
    "ticktape._avrovm",
    module_doc,
    sizeof(ModState),
    avrovm_methods,
    avrovm_slots,
    avrovm_traverse,
    avrovm_clear,
    avrovm_free,
};

PyMODINIT_FUNC
PyInit__avrovm(void)
{
    return PyModuleDef_Init(&avrovm_module);
}
