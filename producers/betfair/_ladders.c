/*
 * producers.betfair._ladders: one Betfair runner's book state, in C.
 *
 * `Runner` is the C twin of `producers.betfair.cache.RunnerCache` (read that
 * file first: it states the rules, taken from betfairlightweight).  It exists
 * because applying ladder deltas level by level in Python was ~70% of the
 * historical import: Betfair's recorded files change ~126 levels per update.
 *
 * A ladder is a sorted array of levels (key, ready PriceSize).  A delta row
 * replaces its level (binary search; insert or delete with memmove); size 0
 * deletes.  Price ladders (atb, atl, trd, spb, spl) are keyed by price, best
 * offers (batb, batl, bdatb, bdatl) by position.  Each level keeps the
 * PriceSize built when it last changed, and each ladder the tuple of them
 * built when it was last asked for, so an unchanged level or ladder is never
 * rebuilt.  PriceSize values are always floats (a JSON 1000 becomes 1000.0):
 * that encodes to the same Avro bytes as the int the Python twin keeps.
 *
 * The importer also parses each line's runner ladders here (split_market_line)
 * and writes each book's Avro bytes straight from the ladders (encode_book),
 * so the ~380 levels of a book never become Python objects.
 *
 * Pure: no I/O, no clock; the same rows give the same state.  Tests check it
 * against the Python twin (random deltas) and against betfairlightweight
 * (the real recorded markets).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "avro_bytes.h" /* ticktape/: the same Avro primitives as the codec's engine */

/* Set once by configure(): the event classes the books are made of. */
static PyObject *PriceSize_cls = NULL;  /* ticktape.events.PriceSize */
static PyObject *RunnerBook_cls = NULL; /* ticktape.events.RunnerBook */
static PyObject *unknown_status = NULL; /* "UNKNOWN" */

typedef struct {
    double key;      /* price, or position for best-offer ladders */
    double price;
    double size;
    PyObject *level; /* PriceSize(price, size) once asked for, owned; NULL until then */
} Level;

/* enc_ladder copies (price, size) as one 16-byte run. */
_Static_assert(offsetof(Level, size) == offsetof(Level, price) + sizeof(double), "price and size adjacent");

typedef struct {
    Level *v;
    Py_ssize_t n, cap;
    PyObject *levels; /* cached tuple of the PriceSizes, or NULL */
    char reverse;     /* best = highest key first (back ladders) */
    char triple;      /* rows are [position, price, size] */
    char clear_on_empty; /* traded volume: an empty list clears it */
} Ladder;

enum { ATB, ATL, TRD, SPB, SPL, BATB, BATL, BDATB, BDATL, N_LADDERS };

static const char *const ladder_names[N_LADDERS] = {
    "atb", "atl", "trd", "spb", "spl", "batb", "batl", "bdatb", "bdatl"};

typedef struct {
    PyObject_HEAD
    PyObject *selection_id;
    PyObject *handicap;
    PyObject *status; /* None until a definition says otherwise */
    PyObject *ltp;
    PyObject *tv;
    PyObject *spn;
    PyObject *spf;
    PyObject *book; /* cached RunnerBook, or NULL after a change */
    char *enc;      /* cached Avro encoding of the RunnerBook (valid when enc_len >= 0) */
    Py_ssize_t enc_len, enc_cap;
    Ladder lad[N_LADDERS];
} Runner;

/* ------------------------------------------------------------------------ */
/* Ladders                                                                  */
/* ------------------------------------------------------------------------ */

static void
ladder_clear(Ladder *l)
{
    Py_ssize_t i;
    for (i = 0; i < l->n; i++) {
        Py_CLEAR(l->v[i].level);
    }
    l->n = 0;  /* (a NULL level is fine: Py_CLEAR skips it) */
    Py_CLEAR(l->levels);
}

static void
ladder_free(Ladder *l)
{
    ladder_clear(l);
    PyMem_Free(l->v);
    l->v = NULL;
    l->cap = 0;
}

/* Index of `key` if present (*found = 1), else where it would be inserted. */
static inline Py_ssize_t
ladder_find(const Ladder *l, double key, int *found)
{
    Py_ssize_t lo = 0, hi = l->n;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        double k = l->v[mid].key;
        if (k == key) {
            *found = 1;
            return mid;
        }
        if (l->reverse ? k > key : k < key) {
            lo = mid + 1;
        }
        else {
            hi = mid;
        }
    }
    *found = 0;
    return lo;
}

static int
as_number(PyObject *v, double *out, const char *ladder, Py_ssize_t row, const char *what)
{
    if (PyFloat_CheckExact(v)) {
        *out = PyFloat_AS_DOUBLE(v);
        return 0;
    }
    if ((PyLong_Check(v) && !PyBool_Check(v)) || PyFloat_Check(v)) { /* JSON true is no number */
        *out = PyFloat_AsDouble(v);
        return (*out == -1.0 && PyErr_Occurred()) ? -1 : 0;
    }
    PyErr_Format(PyExc_TypeError, "%s row %zd: %s must be a number, got %.100s", ladder, row, what,
                 Py_TYPE(v)->tp_name);
    return -1;
}

static PyObject *
new_price_size(double price, double size)
{
    PyTypeObject *tp = (PyTypeObject *)PriceSize_cls;
    PyObject *p, *sz, *ps;
    p = PyFloat_FromDouble(price);
    sz = p ? PyFloat_FromDouble(size) : NULL;
    ps = sz ? tp->tp_alloc(tp, 2) : NULL;
    if (ps == NULL) {
        Py_XDECREF(p);
        Py_XDECREF(sz);
        return NULL;
    }
    avro_tuple_reset_hash(ps);
    PyTuple_SET_ITEM(ps, 0, p);
    PyTuple_SET_ITEM(ps, 1, sz);
    return ps;
}

static int
ladder_set(Ladder *l, double key, double price, double size)
{
    int found;
    Py_ssize_t i = ladder_find(l, key, &found);
    if (size == 0.0) {
        if (found) {
            Py_XDECREF(l->v[i].level);
            memmove(&l->v[i], &l->v[i + 1], (size_t)(l->n - i - 1) * sizeof(Level));
            l->n--;
        }
        return 0;
    }
    if (found) {
        l->v[i].price = price;
        l->v[i].size = size;
        Py_CLEAR(l->v[i].level);
        return 0;
    }
    if (l->n == l->cap) {
        Py_ssize_t cap = l->cap ? l->cap * 2 : 16;
        Level *v = PyMem_Realloc(l->v, (size_t)cap * sizeof(Level));
        if (v == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        l->v = v;
        l->cap = cap;
    }
    memmove(&l->v[i + 1], &l->v[i], (size_t)(l->n - i) * sizeof(Level));
    l->v[i].key = key;
    l->v[i].price = price;
    l->v[i].size = size;
    l->v[i].level = NULL;
    l->n++;
    return 0;
}

/* Apply a ladder delta (a list of rows); see RunnerCache / Ladder.update.
 *
 * Converting a value can run Python code (an int subclass's __float__, and
 * __bool__ on rows), which can mutate the rows list, a row, or this runner.
 * So no borrowed item or pointer into an item array is kept across a
 * conversion: each row and its values are held (strong references) while
 * they are converted, and the rows list's size is read again at every row
 * (a list emptied mid-update ends it, as `for row in rows` does). */
static int
ladder_update(Ladder *l, PyObject *rows, const char *name)
{
    PyObject *seq;
    Py_ssize_t i, k, width = l->triple ? 3 : 2;
    int truth = PyObject_IsTrue(rows);
    if (truth < 0) {
        return -1;
    }
    if (!truth) {
        if (l->clear_on_empty) {
            ladder_clear(l);
        }
        return 0;
    }
    if (!PyList_Check(rows) && !PyTuple_Check(rows)) { /* as the Python twin: a JSON object is no list */
        PyErr_Format(PyExc_TypeError, "%s: expected a list of rows, got %.100s", name, Py_TYPE(rows)->tp_name);
        return -1;
    }
    seq = PySequence_Fast(rows, "");
    if (seq == NULL) {
        return -1;
    }
    Py_CLEAR(l->levels); /* changed from here on, even if a row fails half-way */
    for (i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        PyObject *row = PySequence_Fast_GET_ITEM(seq, i);
        PyObject *f[3] = {NULL, NULL, NULL};
        double key, price, size;
        int r;
        if ((PyList_Check(row) || PyTuple_Check(row)) && Py_SIZE(row) == width) {
            PyObject **items = PyList_Check(row) ? ((PyListObject *)row)->ob_item : ((PyTupleObject *)row)->ob_item;
            for (k = 0; k < width; k++) {
                f[k] = Py_NewRef(items[k]);
            }
        }
        else {
            if (PyList_Check(row) || PyTuple_Check(row)) {
                PyErr_Format(PyExc_ValueError, "%s row %zd: expected %zd values, got %zd", name, i, width,
                             Py_SIZE(row));
            }
            else {
                PyErr_Format(PyExc_TypeError, "%s row %zd: expected a list, got %.100s", name, i,
                             Py_TYPE(row)->tp_name);
            }
            goto fail;
        }
        r = as_number(f[0], &key, name, i, l->triple ? "position" : "price") < 0 ||
            as_number(f[width - 1], &size, name, i, "size") < 0 ||
            (l->triple && as_number(f[1], &price, name, i, "price") < 0);
        for (k = 0; k < width; k++) {
            Py_DECREF(f[k]);
        }
        if (r) {
            goto fail;
        }
        if (!l->triple) {
            price = key;
        }
        if (ladder_set(l, key, price, size) < 0) {
            goto fail;
        }
    }
    Py_DECREF(seq);
    Py_CLEAR(l->levels); /* a __float__ may have asked for the levels mid-update */
    return 0;
fail:
    Py_DECREF(seq);
    Py_CLEAR(l->levels);
    return -1;
}

/* The ladder's levels, best first, as a tuple of PriceSize (new reference). */
static PyObject *
ladder_levels(Ladder *l)
{
    PyObject *t;
    Py_ssize_t i;
    if (l->levels == NULL) {
        t = PyTuple_New(l->n);
        if (t == NULL) {
            return NULL;
        }
        for (i = 0; i < l->n; i++) {
            Level *lv = &l->v[i];
            if (lv->level == NULL && (lv->level = new_price_size(lv->price, lv->size)) == NULL) {
                Py_DECREF(t);
                return NULL;
            }
            Py_INCREF(lv->level);
            PyTuple_SET_ITEM(t, i, lv->level);
        }
        l->levels = t;
    }
    Py_INCREF(l->levels);
    return l->levels;
}

/* ------------------------------------------------------------------------ */
/* Runner                                                                   */
/* ------------------------------------------------------------------------ */

static int
check_configured(void)
{
    if (PriceSize_cls == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "producers.betfair._ladders.configure() was not called");
        return -1;
    }
    return 0;
}

static PyObject *
Runner_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"selection_id", "handicap", NULL};
    PyObject *selection_id, *handicap;
    Runner *self;
    int i;
    if (check_configured() < 0 ||
        !PyArg_ParseTupleAndKeywords(args, kwds, "OO:Runner", kwlist, &selection_id, &handicap)) {
        return NULL;
    }
    self = (Runner *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    Py_INCREF(selection_id);
    self->selection_id = selection_id;
    Py_INCREF(handicap);
    self->handicap = handicap;
    self->status = Py_NewRef(Py_None);
    self->ltp = Py_NewRef(Py_None);
    self->tv = PyLong_FromLong(0);
    self->spn = Py_NewRef(Py_None);
    self->spf = Py_NewRef(Py_None);
    self->enc_len = -1;
    if (self->tv == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    for (i = 0; i < N_LADDERS; i++) {
        self->lad[i].reverse = (i == ATB || i == SPB);
        self->lad[i].triple = (i >= BATB);
        self->lad[i].clear_on_empty = (i == TRD);
    }
    return (PyObject *)self;
}

static int
Runner_traverse(Runner *self, visitproc visit, void *arg)
{
    int i;
    Py_ssize_t j;
    Py_VISIT(self->selection_id);
    Py_VISIT(self->handicap);
    Py_VISIT(self->status);
    Py_VISIT(self->ltp);
    Py_VISIT(self->tv);
    Py_VISIT(self->spn);
    Py_VISIT(self->spf);
    Py_VISIT(self->book);
    for (i = 0; i < N_LADDERS; i++) {
        Py_VISIT(self->lad[i].levels);
        for (j = 0; j < self->lad[i].n; j++) {
            Py_VISIT(self->lad[i].v[j].level); /* NULL is skipped */
        }
    }
    return 0;
}

static int
Runner_clear(Runner *self)
{
    int i;
    Py_CLEAR(self->selection_id);
    Py_CLEAR(self->handicap);
    Py_CLEAR(self->status);
    Py_CLEAR(self->ltp);
    Py_CLEAR(self->tv);
    Py_CLEAR(self->spn);
    Py_CLEAR(self->spf);
    Py_CLEAR(self->book);
    for (i = 0; i < N_LADDERS; i++) {
        ladder_free(&self->lad[i]);
    }
    PyMem_Free(self->enc);
    self->enc = NULL;
    self->enc_len = -1;
    self->enc_cap = 0;
    return 0;
}

static void
Runner_dealloc(Runner *self)
{
    PyObject_GC_UnTrack(self);
    Runner_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Drop the runner's cached book and encoding (its state changed). */
static void
runner_changed(Runner *self)
{
    Py_CLEAR(self->book);
    self->enc_len = -1;
}

/* Which field of a runner change a key names: a ladder index, or one of these. */
enum { F_LTP = N_LADDERS, F_TV, F_SPN, F_SPF, F_OTHER };

static int
field_of(PyObject *key)
{
    Py_ssize_t n;
    const char *s;
    int i;
    if (!PyUnicode_Check(key) || !PyUnicode_IS_COMPACT_ASCII(key)) {
        return F_OTHER;
    }
    s = (const char *)PyUnicode_DATA(key);
    n = PyUnicode_GET_LENGTH(key);
    if (n == 3) {
        if (s[0] == 'a' && s[1] == 't') {
            return s[2] == 'b' ? ATB : s[2] == 'l' ? ATL : F_OTHER;
        }
        if (memcmp(s, "trd", 3) == 0) {
            return TRD;
        }
        if (memcmp(s, "ltp", 3) == 0) {
            return F_LTP;
        }
        if (s[0] == 's' && s[1] == 'p') {
            switch (s[2]) {
            case 'b': return SPB;
            case 'l': return SPL;
            case 'n': return F_SPN;
            case 'f': return F_SPF;
            default: return F_OTHER;
            }
        }
        return F_OTHER;
    }
    if (n == 2) {
        return (s[0] == 't' && s[1] == 'v') ? F_TV : F_OTHER;
    }
    for (i = BATB; i < N_LADDERS; i++) {
        if ((Py_ssize_t)strlen(ladder_names[i]) == n && memcmp(s, ladder_names[i], (size_t)n) == 0) {
            return i;
        }
    }
    return F_OTHER;
}

/* A stream spn/spf as the book holds it (new reference, NULL on error): the
 * words Betfair sends for a starting price it cannot compute ("NaN",
 * "Infinity", "-Infinity") as the doubles they name, anything else as sent
 * (the Python twin's sp_value).  Exact str only; the comparison runs no
 * Python code. */
static PyObject *
sp_value(PyObject *value)
{
    if (PyUnicode_CheckExact(value)) {
        if (PyUnicode_CompareWithASCIIString(value, "NaN") == 0) {
            return PyFloat_FromDouble(Py_NAN);
        }
        if (PyUnicode_CompareWithASCIIString(value, "Infinity") == 0) {
            return PyFloat_FromDouble(Py_HUGE_VAL);
        }
        if (PyUnicode_CompareWithASCIIString(value, "-Infinity") == 0) {
            return PyFloat_FromDouble(-Py_HUGE_VAL);
        }
    }
    return Py_NewRef(value);
}

PyDoc_STRVAR(Runner_apply_doc,
"apply(rc) -> None\n\n"
"Apply one runner change (an `rc` entry of a market change, parsed JSON).\n"
"Ladder fields replace their levels; ltp/tv/spn/spf replace the value;\n"
"id, hc and unknown fields are ignored, as betfairlightweight does.");

static PyObject *
Runner_apply(Runner *self, PyObject *rc)
{
    PyObject *key, *value;
    Py_ssize_t pos = 0, size;
    if (!PyDict_Check(rc)) {
        PyErr_Format(PyExc_TypeError, "runner change must be a JSON object, got %.100s", Py_TYPE(rc)->tp_name);
        return NULL;
    }
    Py_INCREF(rc);
    runner_changed(self);
    size = PyDict_GET_SIZE(rc);
    while (PyDict_Next(rc, &pos, &key, &value)) {
        /* held: a ladder's __bool__ / __float__ may remove them from rc */
        int f = field_of(key), r = 0;
        Py_INCREF(value);
        if (f < N_LADDERS) {
            r = ladder_update(&self->lad[f], value, ladder_names[f]);
        }
        else {
            switch (f) {
            case F_LTP: Py_SETREF(self->ltp, Py_NewRef(value)); break;
            case F_TV: Py_SETREF(self->tv, Py_NewRef(value)); break;
            case F_SPN:
            case F_SPF: {
                PyObject *sp = sp_value(value);
                if (sp == NULL) {
                    r = -1;
                }
                else if (f == F_SPN) {
                    Py_SETREF(self->spn, sp);
                }
                else {
                    Py_SETREF(self->spf, sp);
                }
                break;
            }
            default: break;
            }
        }
        Py_DECREF(value);
        if (r == 0 && PyDict_GET_SIZE(rc) != size) {
            /* what the Python twin's `for name, value in rc.items()` raises */
            PyErr_SetString(PyExc_RuntimeError, "dictionary changed size during iteration");
            r = -1;
        }
        if (r < 0) {
            Py_DECREF(rc);
            runner_changed(self);
            return NULL;
        }
    }
    Py_DECREF(rc);
    runner_changed(self); /* after the loop too: Python code run mid-change may have rebuilt the caches */
    Py_RETURN_NONE;
}

PyDoc_STRVAR(Runner_set_status_doc,
"set_status(status) -> None\n\nThe runner's status from a market definition (None = not known yet).");

static PyObject *
Runner_set_status(Runner *self, PyObject *status)
{
    Py_CLEAR(self->book);
    self->enc_len = -1;
    Py_SETREF(self->status, Py_NewRef(status));
    Py_RETURN_NONE;
}

/* The first non-empty of three ladders' levels (new reference). */
static PyObject *
first_levels(Runner *self, int a, int b, int c)
{
    int order[3] = {a, b, c};
    int i;
    for (i = 0; i < 2; i++) {
        if (self->lad[order[i]].n > 0) {
            return ladder_levels(&self->lad[order[i]]);
        }
    }
    return ladder_levels(&self->lad[order[2]]);
}

PyDoc_STRVAR(Runner_runner_book_doc,
"runner_book() -> RunnerBook\n\n"
"The runner's book now (the same object until the next change).  Back and lay\n"
"are the full-depth ladder when it has levels, else best display offers, else\n"
"best offers.");

static PyObject *
Runner_runner_book(Runner *self, PyObject *Py_UNUSED(ignored))
{
    PyTypeObject *tp = (PyTypeObject *)RunnerBook_cls;
    PyObject *book, *status, *back, *lay, *traded, *sp_back, *sp_lay;
    int truth;
    if (self->book != NULL) {
        return Py_NewRef(self->book);
    }
    status = Py_NewRef(self->status); /* held: its __bool__ may run any code */
    truth = PyObject_IsTrue(status);
    if (truth < 0) {
        Py_DECREF(status);
        return NULL;
    }
    if (!truth) {
        Py_SETREF(status, Py_NewRef(unknown_status));
    }
    back = first_levels(self, ATB, BDATB, BATB);
    lay = back ? first_levels(self, ATL, BDATL, BATL) : NULL;
    traded = lay ? ladder_levels(&self->lad[TRD]) : NULL;
    /* spl -> back stake taken, spb -> lay liability taken: betfairlightweight's mapping */
    sp_back = traded ? ladder_levels(&self->lad[SPL]) : NULL;
    sp_lay = sp_back ? ladder_levels(&self->lad[SPB]) : NULL;
    book = sp_lay ? tp->tp_alloc(tp, 12) : NULL;
    if (book == NULL) {
        Py_DECREF(status);
        Py_XDECREF(back);
        Py_XDECREF(lay);
        Py_XDECREF(traded);
        Py_XDECREF(sp_back);
        Py_XDECREF(sp_lay);
        return NULL;
    }
    avro_tuple_reset_hash(book);
    PyTuple_SET_ITEM(book, 0, Py_NewRef(self->selection_id));
    PyTuple_SET_ITEM(book, 1, Py_NewRef(self->handicap));
    PyTuple_SET_ITEM(book, 2, status);
    PyTuple_SET_ITEM(book, 3, Py_NewRef(self->ltp));
    PyTuple_SET_ITEM(book, 4, Py_NewRef(self->tv));
    PyTuple_SET_ITEM(book, 5, back);
    PyTuple_SET_ITEM(book, 6, lay);
    PyTuple_SET_ITEM(book, 7, traded);
    PyTuple_SET_ITEM(book, 8, Py_NewRef(self->spn));
    PyTuple_SET_ITEM(book, 9, Py_NewRef(self->spf));
    PyTuple_SET_ITEM(book, 10, sp_back);
    PyTuple_SET_ITEM(book, 11, sp_lay);
    Py_XSETREF(self->book, Py_NewRef(book)); /* (a __bool__ above may have cached one) */
    return book;
}

PyDoc_STRVAR(Runner_ladder_doc, "ladder(name) -> tuple[PriceSize, ...]\n\nOne ladder's levels by its stream name (atb, batl, ...).");

static PyObject *
Runner_ladder(Runner *self, PyObject *name)
{
    int f = field_of(name);
    if (f >= N_LADDERS) {
        PyErr_Format(PyExc_KeyError, "no ladder named %R", name);
        return NULL;
    }
    return ladder_levels(&self->lad[f]);
}

static PyMethodDef Runner_methods[] = {
    {"apply", (PyCFunction)Runner_apply, METH_O, Runner_apply_doc},
    {"set_status", (PyCFunction)Runner_set_status, METH_O, Runner_set_status_doc},
    {"runner_book", (PyCFunction)Runner_runner_book, METH_NOARGS, Runner_runner_book_doc},
    {"ladder", (PyCFunction)Runner_ladder, METH_O, Runner_ladder_doc},
    {NULL, NULL, 0, NULL},
};

#define GETTER(field)                                                      \
    static PyObject *Runner_get_##field(Runner *self, void *Py_UNUSED(c)) \
    {                                                                      \
        return Py_NewRef(self->field);                                     \
    }
GETTER(selection_id)
GETTER(handicap)
GETTER(status)
GETTER(ltp)
GETTER(tv)
GETTER(spn)
GETTER(spf)

static PyGetSetDef Runner_getset[] = {
    {"selection_id", (getter)Runner_get_selection_id, NULL, "the runner's selection id", NULL},
    {"handicap", (getter)Runner_get_handicap, NULL, "the runner's handicap", NULL},
    {"status", (getter)Runner_get_status, NULL, "status from the last definition (None before one)", NULL},
    {"ltp", (getter)Runner_get_ltp, NULL, "last traded price (None before one)", NULL},
    {"tv", (getter)Runner_get_tv, NULL, "total matched on the runner", NULL},
    {"spn", (getter)Runner_get_spn, NULL, "starting price near", NULL},
    {"spf", (getter)Runner_get_spf, NULL, "starting price far", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject Runner_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "producers.betfair._ladders.Runner",
    .tp_basicsize = sizeof(Runner),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = PyDoc_STR("Runner(selection_id, handicap): one runner's ladders and its last RunnerBook."),
    .tp_new = Runner_new,
    .tp_dealloc = (destructor)Runner_dealloc,
    .tp_traverse = (traverseproc)Runner_traverse,
    .tp_clear = (inquiry)Runner_clear,
    .tp_methods = Runner_methods,
    .tp_getset = Runner_getset,
};

/* ------------------------------------------------------------------------ */
/* Avro encoding of books (the import's fast path)                          */
/* ------------------------------------------------------------------------ */

/* The importer writes books straight from the ladders, never building the
 * PriceSize objects: Avro binary as the schema MarketBook.v1 lays it out
 * (the same bytes ticktape.codec writes for the MarketBook event; a start-up
 * self-check in producers.betfair.cache compares the two and turns this path
 * off if they ever differ, e.g. after a schema change). */

typedef struct {
    char *data;
    Py_ssize_t len, cap;
} Buf;

static int
buf_reserve(Buf *b, Py_ssize_t need)
{
    Py_ssize_t cap;
    char *p;
    if (b->cap - b->len >= need) {
        return 0;
    }
    cap = b->cap ? b->cap : 256;
    while (cap - b->len < need) {
        cap *= 2;
    }
    p = PyMem_Realloc(b->data, (size_t)cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

static inline int
buf_raw(Buf *b, const void *src, Py_ssize_t n)
{
    if (buf_reserve(b, n) < 0) {
        return -1;
    }
    memcpy(b->data + b->len, src, (size_t)n);
    b->len += n;
    return 0;
}

static inline int
buf_varlong(Buf *b, int64_t v)
{
    unsigned char *end;
    if (buf_reserve(b, AVRO_LONG_MAX_BYTES) < 0) {
        return -1;
    }
    end = avro_put_long((unsigned char *)b->data + b->len, v);
    b->len = (Py_ssize_t)((char *)end - b->data);
    return 0;
}

static inline int
buf_double(Buf *b, double x)
{
    if (buf_reserve(b, 8) < 0) {
        return -1;
    }
    avro_put_double((unsigned char *)b->data + b->len, x);
    b->len += 8;
    return 0;
}

static int
enc_long_field(Buf *b, PyObject *v, const char *field, int bits)
{
    long long x;
    int overflow = 0;
    if (!PyLong_Check(v) || PyBool_Check(v)) {
        PyErr_Format(PyExc_TypeError, "%s: expected an int, got %.100s", field, Py_TYPE(v)->tp_name);
        return -1;
    }
    x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (x == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow || (bits == 32 && (x < INT32_MIN || x > INT32_MAX))) {
        PyErr_Format(PyExc_ValueError, "%s: %R is out of range for a %d-bit int", field, v, bits);
        return -1;
    }
    return buf_varlong(b, (int64_t)x);
}

static int
enc_double_field(Buf *b, PyObject *v, const char *field)
{
    double x;
    if (PyFloat_Check(v)) {
        x = PyFloat_AS_DOUBLE(v);
    }
    else if (PyLong_Check(v) && !PyBool_Check(v)) {
        x = PyLong_AsDouble(v);
        if (x == -1.0 && PyErr_Occurred()) {
            return -1;
        }
    }
    else {
        PyErr_Format(PyExc_TypeError, "%s: expected a number, got %.100s", field, Py_TYPE(v)->tp_name);
        return -1;
    }
    return buf_double(b, x);
}

static int
enc_string_field(Buf *b, PyObject *v, const char *field)
{
    const char *s;
    Py_ssize_t n;
    if (!PyUnicode_Check(v)) {
        PyErr_Format(PyExc_TypeError, "%s: expected a str, got %.100s", field, Py_TYPE(v)->tp_name);
        return -1;
    }
    s = PyUnicode_AsUTF8AndSize(v, &n);
    if (s == NULL || buf_varlong(b, n) < 0) {
        return -1;
    }
    return buf_raw(b, s, n);
}

/* ["null", "double"]: branch 0 for None, else branch 1 and the number. */
static int
enc_optional_double(Buf *b, PyObject *v, const char *field)
{
    if (v == Py_None) {
        return buf_varlong(b, 0);
    }
    return buf_varlong(b, 1) < 0 ? -1 : enc_double_field(b, v, field);
}

/* Flags take True or False only: PyObject_IsTrue could run a __bool__ in the
 * middle of encoding a book (and it did invalidate runners' encodings). */
static int
enc_bool_field(Buf *b, PyObject *v, const char *field)
{
    char c;
    if (v == Py_True || v == Py_False) {
        c = (char)(v == Py_True);
        return buf_raw(b, &c, 1);
    }
    PyErr_Format(PyExc_TypeError, "%s: expected a bool, got %.100s", field, Py_TYPE(v)->tp_name);
    return -1;
}

/* array<PriceSize>: one block of n levels (16 bytes each), then the end marker. */
static int
enc_ladder(Buf *b, const Ladder *l)
{
    Py_ssize_t i;
    if (l->n > 0) {
        if (buf_varlong(b, l->n) < 0) {
            return -1;
        }
#if PY_BIG_ENDIAN
        for (i = 0; i < l->n; i++) {
            if (buf_double(b, l->v[i].price) < 0 || buf_double(b, l->v[i].size) < 0) {
                return -1;
            }
        }
#else
        if (buf_reserve(b, 16 * l->n) < 0) {
            return -1;
        }
        for (i = 0; i < l->n; i++) {
            memcpy(b->data + b->len, &l->v[i].price, 16); /* price, size: adjacent doubles */
            b->len += 16;
        }
#endif
    }
    return buf_varlong(b, 0);
}

static const Ladder *
first_ladder(const Runner *self, int a, int b, int c)
{
    return self->lad[a].n > 0 ? &self->lad[a] : self->lad[b].n > 0 ? &self->lad[b] : &self->lad[c];
}

/* The runner's RunnerBook in Avro (cached until the next change).
 *
 * The status's __bool__ is the only call here that can run Python code; it
 * runs first, on a held reference, before the byte buffer is touched (a
 * re-entrant encoding of this runner may reallocate it).  The caller copies
 * self->enc before calling into Python again. */
static int
runner_encode(Runner *self)
{
    Buf b;
    PyObject *status;
    int truth, r;
    if (self->enc_len >= 0) {
        return 0;
    }
    status = Py_NewRef(self->status);
    truth = PyObject_IsTrue(status);
    if (truth < 0) {
        Py_DECREF(status);
        return -1;
    }
    b.data = self->enc;
    b.cap = self->enc_cap;
    b.len = 0;
    r = enc_long_field(&b, self->selection_id, "runner selection_id", 64) < 0 ||
        enc_double_field(&b, self->handicap, "runner handicap") < 0 ||
        enc_string_field(&b, truth ? status : unknown_status, "runner status") < 0;
    Py_DECREF(status);
    if (r) {
        goto fail;
    }
    /* RunnerBook v2: v1's fields, then sp_near, sp_far, sp_back_stake_taken (spl),
     * sp_lay_liability_taken (spb) */
    if (enc_optional_double(&b, self->ltp, "runner ltp") < 0 ||
        enc_double_field(&b, self->tv, "runner tv") < 0 ||
        enc_ladder(&b, first_ladder(self, ATB, BDATB, BATB)) < 0 ||
        enc_ladder(&b, first_ladder(self, ATL, BDATL, BATL)) < 0 ||
        enc_ladder(&b, &self->lad[TRD]) < 0 ||
        enc_optional_double(&b, self->spn, "runner spn") < 0 ||
        enc_optional_double(&b, self->spf, "runner spf") < 0 ||
        enc_ladder(&b, &self->lad[SPL]) < 0 ||
        enc_ladder(&b, &self->lad[SPB]) < 0) {
        goto fail;
    }
    self->enc = b.data;
    self->enc_cap = b.cap;
    self->enc_len = b.len;
    return 0;
fail:
    self->enc = b.data;
    self->enc_cap = b.cap;
    return -1;
}

PyDoc_STRVAR(encode_book_doc,
"encode_book(header, market_id, ts_event, ts_recv, status, in_play, bet_delay,\n"
"            total_matched, version, complete, cross_matching,\n"
"            number_of_active_runners, runners) -> bytes\n\n"
"The single-object encoding of the MarketBook with these fields (header =\n"
"C3 01 + MarketBook's schema fingerprint) and these Runner objects' books,\n"
"without building the book's Python objects.  The same bytes as\n"
"ticktape.codec encoding the equal MarketBook event.");

static PyObject *
encode_book(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    Buf b = {NULL, 0, 0};
    PyObject *runners = NULL, *out = NULL;
    Py_ssize_t n, i;
    if (nargs != 13) {
        PyErr_Format(PyExc_TypeError, "encode_book() takes 13 arguments (%zd given)", nargs);
        return NULL;
    }
    if (!PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "encode_book(): header must be bytes");
        return NULL;
    }
    if (!PyList_Check(args[12])) {
        PyErr_SetString(PyExc_TypeError, "encode_book(): runners must be a list of Runner");
        return NULL;
    }
    /* A snapshot of the list: a status's __bool__ (runner_encode) may change it. */
    runners = PyList_AsTuple(args[12]);
    if (runners == NULL) {
        return NULL;
    }
    n = PyTuple_GET_SIZE(runners);
    for (i = 0; i < n; i++) {
        if (!PyObject_TypeCheck(PyTuple_GET_ITEM(runners, i), &Runner_Type)) {
            PyErr_SetString(PyExc_TypeError, "encode_book(): runners must be a list of Runner");
            goto done;
        }
    }
    /* None of these calls runs Python code (flags must be real bools). */
    if (buf_raw(&b, PyBytes_AS_STRING(args[0]), PyBytes_GET_SIZE(args[0])) < 0 ||
        enc_string_field(&b, args[1], "market_id") < 0 ||
        enc_long_field(&b, args[2], "ts_event", 64) < 0 ||
        enc_long_field(&b, args[3], "ts_recv", 64) < 0 ||
        enc_string_field(&b, args[4], "status") < 0 ||
        enc_bool_field(&b, args[5], "in_play") < 0 ||
        enc_long_field(&b, args[6], "bet_delay", 32) < 0 ||
        enc_double_field(&b, args[7], "total_matched") < 0 ||
        enc_long_field(&b, args[8], "version", 64) < 0 ||
        enc_bool_field(&b, args[9], "complete") < 0 ||
        enc_bool_field(&b, args[10], "cross_matching") < 0 ||
        enc_long_field(&b, args[11], "number_of_active_runners", 32) < 0) {
        goto done;
    }
    if (n > 0 && buf_varlong(&b, n) < 0) {
        goto done;
    }
    for (i = 0; i < n; i++) {
        /* copied right after it is encoded: nothing runs in between */
        Runner *r = (Runner *)PyTuple_GET_ITEM(runners, i);
        if (runner_encode(r) < 0 || buf_raw(&b, r->enc, r->enc_len) < 0) {
            goto done;
        }
    }
    if (buf_varlong(&b, 0) < 0) {
        goto done;
    }
    out = PyBytes_FromStringAndSize(b.data, b.len);
done:
    Py_DECREF(runners);
    PyMem_Free(b.data);
    return out;
}

/* ------------------------------------------------------------------------ */
/* Stream lines parsed in C (the import's fast path)                        */
/* ------------------------------------------------------------------------ */

/* Most of a recorded `mcm` line is runner ladders (~250 numbers in ~2 KB).
 * Parsing them with orjson builds (and frees) ~400 Python objects a line.
 * split_market_line() parses each market change's `rc` array here instead,
 * into a Changes object of plain doubles, and hands back the line with each
 * such array replaced by its index ("rc":0) for orjson to parse the rest.
 *
 * It takes only what it fully understands and otherwise returns None, so
 * the caller parses the original line with orjson, as the Python path does:
 * numbers are taken only when the exact fast path applies (at most 15
 * significant digits and a power of ten up to 22: one correctly rounded
 * IEEE operation, the same double any correct parser gives), ladder rows
 * must be arrays of 2 (or 3) numbers, a runner change may hold only the
 * stream's documented keys, once each, and keys with escapes are refused.
 * Everything outside the rc arrays is copied byte for byte: the shortened
 * line is valid JSON exactly when the original is. */

typedef struct {
    PyObject *id, *hc;                /* hc NULL when absent (means 0) */
    PyObject *values[4];              /* ltp, tv, spn, spf (owned; NULL when absent) */
    Py_ssize_t start[N_LADDERS];      /* first row in Changes.rows; -1 when absent */
    Py_ssize_t count[N_LADDERS];
} RunnerChange;

typedef struct {
    PyObject_HEAD
    RunnerChange *rc;
    Py_ssize_t n, cap;
    double *rows; /* (key, price, size) triples */
    Py_ssize_t nrows, rows_cap;
} Changes;

static void
Changes_dealloc(Changes *self)
{
    Py_ssize_t i;
    int k;
    for (i = 0; i < self->n; i++) {
        Py_XDECREF(self->rc[i].id);
        Py_XDECREF(self->rc[i].hc);
        for (k = 0; k < 4; k++) {
            Py_XDECREF(self->rc[i].values[k]);
        }
    }
    PyMem_Free(self->rc);
    PyMem_Free(self->rows);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Py_ssize_t
Changes_len(Changes *self)
{
    return self->n;
}

static PySequenceMethods Changes_as_sequence = {.sq_length = (lenfunc)Changes_len};

static PyTypeObject Changes_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "producers.betfair._ladders.Changes",
    .tp_basicsize = sizeof(Changes),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = PyDoc_STR("A market change's runner changes (`rc`), parsed in C by split_market_line()."),
    .tp_dealloc = (destructor)Changes_dealloc,
    .tp_as_sequence = &Changes_as_sequence,
};

/* Cursor over a line; `ok` turns 0 at the first thing the fast path does not take. */
typedef struct {
    const char *p, *end;
} Scan;

static const double pow10_exact[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                       1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

static inline void
skip_ws(Scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r')) {
        s->p++;
    }
}

static inline int
expect(Scan *s, char c)
{
    skip_ws(s);
    if (s->p < s->end && *s->p == c) {
        s->p++;
        return 1;
    }
    return 0;
}

/* A JSON number on the exact fast path: *x its value, *is_int whether it was
 * written as an integer (orjson then gives an int).  0 when not taken. */
static int
scan_number(Scan *s, double *x, int *is_int, long long *ival)
{
    const char *p, *end = s->end;
    uint64_t m = 0;
    int neg = 0, digits = 0, frac = 0, e = 0, eneg = 0, edigits = 0;
    skip_ws(s);
    p = s->p;
    if (p < end && *p == '-') {
        neg = 1;
        p++;
    }
    if (p >= end || *p < '0' || *p > '9') {
        return 0;
    }
    if (*p == '0') {
        p++;
        if (p < end && *p >= '0' && *p <= '9') {
            return 0; /* leading zero: invalid JSON */
        }
    }
    else {
        while (p < end && *p >= '0' && *p <= '9') {
            if (++digits > 15) {
                return 0;
            }
            m = m * 10 + (uint64_t)(*p++ - '0');
        }
    }
    *is_int = 1;
    if (p < end && *p == '.') {
        *is_int = 0;
        p++;
        if (p >= end || *p < '0' || *p > '9') {
            return 0;
        }
        while (p < end && *p >= '0' && *p <= '9') {
            if (m == 0 && *p == '0') { /* leading zeros of 0.00x are not significant */
                frac++;
                p++;
                continue;
            }
            if (++digits > 15) {
                return 0;
            }
            m = m * 10 + (uint64_t)(*p++ - '0');
            frac++;
        }
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        *is_int = 0;
        p++;
        if (p < end && (*p == '+' || *p == '-')) {
            eneg = *p++ == '-';
        }
        if (p >= end || *p < '0' || *p > '9') {
            return 0;
        }
        while (p < end && *p >= '0' && *p <= '9') {
            if (++edigits > 3) {
                return 0;
            }
            e = e * 10 + (*p++ - '0');
        }
        if (eneg) {
            e = -e;
        }
    }
    e -= frac;
    if (*is_int) {
        *ival = neg ? -(long long)m : (long long)m;
        *x = (double)*ival; /* "-0" is the int 0: 0.0, as the Python path converts it */
    }
    else {
        double v;
        if (e < -22 || e > 22) {
            return 0;
        }
        v = e < 0 ? (double)m / pow10_exact[-e] : (double)m * pow10_exact[e];
        *x = neg ? -v : v;
    }
    s->p = p;
    return 1;
}

/* A key without escapes: [*k, *k + *n).  0 when not taken. */
static int
scan_key(Scan *s, const char **k, Py_ssize_t *n)
{
    const char *p;
    if (!expect(s, '"')) {
        return 0;
    }
    p = s->p;
    while (p < s->end && *p != '"') {
        if (*p == '\\' || (unsigned char)*p < 0x20) {
            return 0;
        }
        p++;
    }
    if (p >= s->end) {
        return 0;
    }
    *k = s->p;
    *n = p - s->p;
    s->p = p + 1;
    return expect(s, ':');
}

/* Skip any JSON value (strings escape-aware, nesting counted); 0 if the line ends first. */
static int
skip_value(Scan *s)
{
    int depth = 0;
    skip_ws(s);
    do {
        if (s->p >= s->end) {
            return 0;
        }
        switch (*s->p) {
        case '"':
            s->p++;
            while (s->p < s->end && *s->p != '"') {
                if (*s->p == '\\' && s->end - s->p < 2) {
                    return 0; /* an escape cut by the end of the line: never step past it */
                }
                s->p += (*s->p == '\\') ? 2 : 1;
            }
            if (s->p >= s->end) {
                return 0;
            }
            s->p++;
            break;
        case '{':
        case '[':
            depth++;
            s->p++;
            break;
        case '}':
        case ']':
            if (depth == 0) {
                return 1; /* the end of the enclosing container: an empty value, let orjson say so */
            }
            depth--;
            s->p++;
            break;
        default:
            s->p++;
            if (depth == 0) {
                /* a literal or number: up to the next delimiter */
                while (s->p < s->end && *s->p != ',' && *s->p != '}' && *s->p != ']') {
                    s->p++;
                }
            }
            break;
        }
    } while (depth > 0);
    return 1;
}

static int
changes_reserve_rows(Changes *c, Py_ssize_t more)
{
    if (c->nrows + more > c->rows_cap) {
        Py_ssize_t cap = c->rows_cap ? c->rows_cap * 2 : 256;
        double *r;
        while (cap < c->nrows + more) {
            cap *= 2;
        }
        r = PyMem_Realloc(c->rows, (size_t)cap * 3 * sizeof(double));
        if (r == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        c->rows = r;
        c->rows_cap = cap;
    }
    return 0;
}

/* A number or null as orjson gives it (int, float, None); NULL + no error when not taken. */
static PyObject *
scan_scalar(Scan *s)
{
    double x;
    int is_int;
    long long iv;
    skip_ws(s);
    if (s->end - s->p >= 4 && memcmp(s->p, "null", 4) == 0) {
        s->p += 4;
        Py_RETURN_NONE;
    }
    if (!scan_number(s, &x, &is_int, &iv)) {
        return NULL;
    }
    return is_int ? PyLong_FromLongLong(iv) : PyFloat_FromDouble(x);
}

/* A ladder's rows: [[k, (p,) s], ...].  1 taken, 0 not taken, -1 error. */
static int
scan_ladder(Scan *s, Changes *c, int ladder, RunnerChange *rc)
{
    int width = ladder >= BATB ? 3 : 2, is_int;
    long long iv;
    rc->start[ladder] = c->nrows;
    rc->count[ladder] = 0;
    if (!expect(s, '[')) {
        return 0;
    }
    if (expect(s, ']')) {
        return 1;
    }
    do {
        double v[3];
        int i;
        if (!expect(s, '[')) {
            return 0;
        }
        for (i = 0; i < width; i++) {
            if ((i > 0 && !expect(s, ',')) || !scan_number(s, &v[i], &is_int, &iv)) {
                return 0;
            }
        }
        if (!expect(s, ']') || changes_reserve_rows(c, 1) < 0) {
            return PyErr_Occurred() ? -1 : 0;
        }
        c->rows[3 * c->nrows] = v[0];
        c->rows[3 * c->nrows + 1] = width == 3 ? v[1] : v[0];
        c->rows[3 * c->nrows + 2] = v[width - 1];
        c->nrows++;
        rc->count[ladder]++;
    } while (expect(s, ','));
    return expect(s, ']');
}

/* One runner change object into c->rc[c->n].  1 taken, 0 not taken, -1 error. */
static int
scan_runner_change(Scan *s, Changes *c)
{
    RunnerChange *rc;
    unsigned seen = 0;
    int k;
    if (c->n == c->cap) {
        Py_ssize_t cap = c->cap ? c->cap * 2 : 8;
        RunnerChange *r = PyMem_Realloc(c->rc, (size_t)cap * sizeof(RunnerChange));
        if (r == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        c->rc = r;
        c->cap = cap;
    }
    rc = &c->rc[c->n++]; /* counted now so dealloc frees what is filled in */
    memset(rc, 0, sizeof(*rc));
    for (k = 0; k < N_LADDERS; k++) {
        rc->start[k] = -1;
    }
    if (!expect(s, '{')) {
        return 0;
    }
    if (expect(s, '}')) {
        return 0; /* no id: the Python path reports it */
    }
    do {
        const char *key;
        Py_ssize_t n;
        int f;
        PyObject *v, **slot;
        if (!scan_key(s, &key, &n)) {
            return 0;
        }
        if (n == 2 && key[0] == 'i' && key[1] == 'd') {
            f = N_LADDERS + 4;
        }
        else if (n == 2 && key[0] == 'h' && key[1] == 'c') {
            f = N_LADDERS + 5;
        }
        else {
            PyObject *name = PyUnicode_FromStringAndSize(key, n);
            if (name == NULL) {
                return -1;
            }
            f = field_of(name);
            Py_DECREF(name);
            if (f == F_OTHER) {
                return 0;
            }
        }
        if (seen & (1u << f)) {
            return 0; /* a key twice: orjson keeps the last one; leave that to it */
        }
        seen |= 1u << f;
        if (f < N_LADDERS) {
            int r = scan_ladder(s, c, f, rc);
            if (r <= 0) {
                return r;
            }
            continue;
        }
        slot = f == N_LADDERS + 4 ? &rc->id : f == N_LADDERS + 5 ? &rc->hc : &rc->values[f - F_LTP];
        v = scan_scalar(s);
        if (v == NULL) {
            return PyErr_Occurred() ? -1 : 0;
        }
        *slot = v;
        if (f == N_LADDERS + 4 && !PyLong_CheckExact(v)) {
            return 0; /* ids are ints; anything else is the Python path's to report */
        }
    } while (expect(s, ','));
    return expect(s, '}') && rc->id != NULL;
}

/* An `rc` array into a new Changes: 1 taken (*out set), 0 not taken, -1 error. */
static int
scan_changes(Scan *s, PyObject **out)
{
    Changes *c = PyObject_New(Changes, &Changes_Type);
    int r = 1;
    if (c == NULL) {
        return -1;
    }
    c->rc = NULL;
    c->n = c->cap = 0;
    c->rows = NULL;
    c->nrows = c->rows_cap = 0;
    if (!expect(s, '[')) {
        r = 0;
    }
    else if (!expect(s, ']')) {
        do {
            r = scan_runner_change(s, c);
        } while (r == 1 && expect(s, ','));
        if (r == 1 && !expect(s, ']')) {
            r = 0;
        }
    }
    if (r == 1) {
        *out = (PyObject *)c;
    }
    else {
        Py_DECREF(c);
    }
    return r;
}

static int
out_append(Buf *b, const char *from, const char *to)
{
    return buf_raw(b, from, to - from);
}

PyDoc_STRVAR(split_market_line_doc,
"split_market_line(line) -> (bytes, list[Changes]) | None\n\n"
"The line with each market change's `rc` array replaced by its index into the\n"
"list (\"rc\":0, ...), and those arrays parsed; None when the line has none or\n"
"holds anything the fast path does not take (parse the line with orjson then).");

static PyObject *
split_market_line(PyObject *Py_UNUSED(module), PyObject *line)
{
    Scan s;
    Buf out = {NULL, 0, 0};
    PyObject *changes = NULL, *res = NULL;
    const char *copied;
    int seen_mc = 0, r;
    if (!PyBytes_Check(line)) {
        PyErr_SetString(PyExc_TypeError, "split_market_line() takes bytes");
        return NULL;
    }
    s.p = copied = PyBytes_AS_STRING(line);
    s.end = s.p + PyBytes_GET_SIZE(line);
    changes = PyList_New(0);
    if (changes == NULL) {
        return NULL;
    }
    if (!expect(&s, '{') || expect(&s, '}')) {
        goto not_taken;
    }
    do { /* top-level keys */
        const char *key;
        Py_ssize_t n;
        if (!scan_key(&s, &key, &n)) {
            goto not_taken;
        }
        if (!(n == 2 && key[0] == 'm' && key[1] == 'c')) {
            if (!skip_value(&s)) {
                goto not_taken;
            }
            continue;
        }
        if (seen_mc++ || !expect(&s, '[')) {
            goto not_taken;
        }
        if (expect(&s, ']')) {
            continue;
        }
        do { /* market changes */
            int seen_rc = 0;
            if (!expect(&s, '{')) {
                goto not_taken;
            }
            if (expect(&s, '}')) {
                continue;
            }
            do { /* a market change's keys */
                if (!scan_key(&s, &key, &n)) {
                    goto not_taken;
                }
                if (!(n == 2 && key[0] == 'r' && key[1] == 'c')) {
                    if (!skip_value(&s)) {
                        goto not_taken;
                    }
                    continue;
                }
                if (seen_rc++) {
                    goto not_taken;
                }
                {
                    PyObject *c = NULL;
                    char index[24];
                    skip_ws(&s);
                    if (out_append(&out, copied, s.p) < 0) {
                        goto error;
                    }
                    r = scan_changes(&s, &c);
                    if (r < 0) {
                        goto error;
                    }
                    if (r == 0) {
                        goto not_taken;
                    }
                    snprintf(index, sizeof(index), "%zd", PyList_GET_SIZE(changes));
                    if (PyList_Append(changes, c) < 0) {
                        Py_DECREF(c);
                        goto error;
                    }
                    Py_DECREF(c);
                    if (buf_raw(&out, index, (Py_ssize_t)strlen(index)) < 0) {
                        goto error;
                    }
                    copied = s.p;
                }
            } while (expect(&s, ','));
            if (!expect(&s, '}')) {
                goto not_taken;
            }
        } while (expect(&s, ','));
        if (!expect(&s, ']')) {
            goto not_taken;
        }
    } while (expect(&s, ','));
    if (!expect(&s, '}') || PyList_GET_SIZE(changes) == 0) {
        goto not_taken;
    }
    if (out_append(&out, copied, s.end) < 0) {
        goto error;
    }
    {
        PyObject *reduced = PyBytes_FromStringAndSize(out.data, out.len);
        if (reduced != NULL) {
            res = PyTuple_Pack(2, reduced, changes);
            Py_DECREF(reduced);
        }
    }
    PyMem_Free(out.data);
    Py_DECREF(changes);
    return res;
not_taken:
    PyMem_Free(out.data);
    Py_DECREF(changes);
    Py_RETURN_NONE;
error:
    PyMem_Free(out.data);
    Py_DECREF(changes);
    return NULL;
}

/* The runner for (id, hc) in the market's dict, made and listed when new (borrowed). */
static Runner *
market_runner(PyObject *runners, PyObject *runner_list, PyObject *id, PyObject *hc)
{
    static PyObject *zero = NULL;
    PyObject *key, *runner;
    if (zero == NULL && (zero = PyLong_FromLong(0)) == NULL) {
        return NULL;
    }
    key = PyTuple_Pack(2, id, hc != NULL ? hc : zero);
    if (key == NULL) {
        return NULL;
    }
    runner = PyDict_GetItemWithError(runners, key); /* borrowed */
    if (runner == NULL && !PyErr_Occurred()) {
        runner = PyObject_CallFunctionObjArgs((PyObject *)&Runner_Type, PyTuple_GET_ITEM(key, 0),
                                              PyTuple_GET_ITEM(key, 1), NULL);
        if (runner != NULL) {
            if (PyDict_SetItem(runners, key, runner) < 0 || PyList_Append(runner_list, runner) < 0) {
                Py_CLEAR(runner);
            }
            else {
                Py_DECREF(runner); /* the dict holds it */
            }
        }
    }
    Py_DECREF(key);
    if (runner != NULL && !PyObject_TypeCheck(runner, &Runner_Type)) {
        PyErr_SetString(PyExc_TypeError, "apply_changes(): runners must hold Runner objects");
        return NULL;
    }
    return (Runner *)runner;
}

/* Apply one parsed runner change (see Runner_apply for the rules). */
static int
runner_apply_parsed(Runner *self, const Changes *c, const RunnerChange *rc)
{
    int k;
    Py_ssize_t i;
    Py_CLEAR(self->book);
    self->enc_len = -1;
    for (k = 0; k < N_LADDERS; k++) {
        Ladder *l = &self->lad[k];
        const double *row;
        if (rc->start[k] < 0) {
            continue;
        }
        if (rc->count[k] == 0) {
            if (l->clear_on_empty) {
                ladder_clear(l);
            }
            continue;
        }
        Py_CLEAR(l->levels);
        row = &c->rows[3 * rc->start[k]];
        for (i = 0; i < rc->count[k]; i++, row += 3) {
            if (ladder_set(l, row[0], row[1], row[2]) < 0) {
                return -1;
            }
        }
    }
    for (k = 0; k < 4; k++) {
        if (rc->values[k] != NULL) {
            PyObject **slot = k == 0 ? &self->ltp : k == 1 ? &self->tv : k == 2 ? &self->spn : &self->spf;
            Py_SETREF(*slot, Py_NewRef(rc->values[k]));
        }
    }
    return 0;
}

PyDoc_STRVAR(apply_changes_doc,
"apply_changes(runners, runner_list, rcs) -> None\n\n"
"Apply a market change's runner changes (`rc`: a list of JSON objects, or\n"
"the Changes split_market_line() parsed): each goes to runners[(id, hc)]\n"
"(hc defaults to 0), a new Runner being created, added to the dict and\n"
"appended to runner_list when the key is new.  The loop of\n"
"MarketCache.fold, in C.");

static PyObject *
apply_changes(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    static PyObject *id_str = NULL, *hc_str = NULL;
    PyObject *runners, *runner_list, *rcs;
    Py_ssize_t i;
    if (nargs != 3 || !PyDict_Check(args[0]) || !PyList_Check(args[1]) ||
        !(PyList_Check(args[2]) || Py_IS_TYPE(args[2], &Changes_Type))) {
        PyErr_SetString(PyExc_TypeError, "apply_changes(runners: dict, runner_list: list, rcs: list | Changes)");
        return NULL;
    }
    runners = args[0];
    runner_list = args[1];
    rcs = args[2];
    if (Py_IS_TYPE(rcs, &Changes_Type)) {
        const Changes *c = (const Changes *)rcs;
        for (i = 0; i < c->n; i++) {
            Runner *runner = market_runner(runners, runner_list, c->rc[i].id, c->rc[i].hc);
            int r;
            if (runner == NULL) {
                return NULL;
            }
            Py_INCREF(runner); /* replacing a value may run a __del__ that drops it from the dict */
            r = runner_apply_parsed(runner, c, &c->rc[i]);
            Py_DECREF(runner);
            if (r < 0) {
                return NULL;
            }
        }
        Py_RETURN_NONE;
    }
    if (id_str == NULL) {
        id_str = PyUnicode_InternFromString("id");
        hc_str = PyUnicode_InternFromString("hc");
        if (id_str == NULL || hc_str == NULL) {
            return NULL;
        }
    }
    for (i = 0; i < PyList_GET_SIZE(rcs); i++) {
        PyObject *rc = PyList_GET_ITEM(rcs, i), *id, *hc, *res;
        Runner *runner;
        if (!PyDict_Check(rc)) {
            PyErr_Format(PyExc_TypeError, "runner change must be a JSON object, got %.100s", Py_TYPE(rc)->tp_name);
            return NULL;
        }
        Py_INCREF(rc); /* the list could drop it */
        id = PyDict_GetItemWithError(rc, id_str);
        if (id == NULL) {
            if (!PyErr_Occurred()) {
                PyErr_SetObject(PyExc_KeyError, id_str);
            }
            Py_DECREF(rc);
            return NULL;
        }
        Py_INCREF(id); /* looking up "hc" may compare keys by a str subclass's __eq__ */
        hc = PyDict_GetItemWithError(rc, hc_str);
        Py_XINCREF(hc);
        runner = (hc == NULL && PyErr_Occurred()) ? NULL : market_runner(runners, runner_list, id, hc);
        Py_XINCREF(runner); /* held before anything else can run */
        Py_DECREF(id);
        Py_XDECREF(hc);
        if (runner == NULL) {
            Py_DECREF(rc);
            return NULL;
        }
        res = Runner_apply(runner, rc);
        Py_DECREF(runner);
        Py_DECREF(rc);
        if (res == NULL) {
            return NULL;
        }
        Py_DECREF(res);
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------ */
/* Module                                                                   */
/* ------------------------------------------------------------------------ */

PyDoc_STRVAR(configure_doc,
"configure(PriceSize, RunnerBook, unknown) -> None\n\n"
"The NamedTuple classes books are built of, and the status of a runner no\n"
"definition has named yet.  Called once by producers.betfair.cache.");

static int
is_plain_tuple_subclass(PyObject *cls)
{
    PyTypeObject *tp;
    if (!PyType_Check(cls)) {
        return 0;
    }
    tp = (PyTypeObject *)cls;
    return PyType_FastSubclass(tp, Py_TPFLAGS_TUPLE_SUBCLASS) && tp->tp_basicsize == PyTuple_Type.tp_basicsize &&
           tp->tp_itemsize == PyTuple_Type.tp_itemsize && tp->tp_dictoffset == 0 && tp->tp_weaklistoffset == 0;
}

static PyObject *
configure(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *price_size, *runner_book, *unknown;
    if (!PyArg_ParseTuple(args, "OOU:configure", &price_size, &runner_book, &unknown)) {
        return NULL;
    }
    if (!is_plain_tuple_subclass(price_size) || !is_plain_tuple_subclass(runner_book)) {
        PyErr_SetString(PyExc_TypeError, "configure() needs two NamedTuple classes");
        return NULL;
    }
    Py_XSETREF(PriceSize_cls, Py_NewRef(price_size));
    Py_XSETREF(RunnerBook_cls, Py_NewRef(runner_book));
    Py_XSETREF(unknown_status, Py_NewRef(unknown));
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"configure", configure, METH_VARARGS, configure_doc},
    {"encode_book", (PyCFunction)(void (*)(void))encode_book, METH_FASTCALL, encode_book_doc},
    {"apply_changes", (PyCFunction)(void (*)(void))apply_changes, METH_FASTCALL, apply_changes_doc},
    {"split_market_line", (PyCFunction)split_market_line, METH_O, split_market_line_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef ladders_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "producers.betfair._ladders",
    .m_doc = "Betfair runner ladders in C: the twin of producers.betfair.cache.RunnerCache.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__ladders(void)
{
    PyObject *m;
    if (PyType_Ready(&Runner_Type) < 0 || PyType_Ready(&Changes_Type) < 0) {
        return NULL;
    }
    m = PyModule_Create(&ladders_module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "Runner", (PyObject *)&Runner_Type) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
