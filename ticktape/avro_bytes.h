/* Avro binary primitives shared by ticktape's C extensions: ticktape/_avrovm.c
 * (the codec's engine) and producers/betfair/_ladders.c (books written straight
 * from the Betfair ladders). One definition, so both write the same bytes.
 *
 * Callers reserve the room first: AVRO_LONG_MAX_BYTES for a long, 8 for a double.
 */
#ifndef TICKTAPE_AVRO_BYTES_H
#define TICKTAPE_AVRO_BYTES_H

#include <Python.h>
#include <stdint.h>
#include <string.h>

#define AVRO_LONG_MAX_BYTES 10

/* A long as Avro writes it (zig-zag, then base-128 varint, low group first);
 * returns the position after it. */
static inline unsigned char *
avro_put_long(unsigned char *p, int64_t v)
{
    uint64_t z = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    while (z >= 0x80) {
        *p++ = (unsigned char)(z | 0x80);
        z >>= 7;
    }
    *p++ = (unsigned char)z;
    return p;
}

/* A double as Avro writes it: 8 bytes, little-endian IEEE 754. */
static inline void
avro_put_double(unsigned char *p, double x)
{
#if PY_BIG_ENDIAN
    unsigned char tmp[8];
    int k;
    memcpy(tmp, &x, 8);
    for (k = 0; k < 8; k++) {
        p[k] = tmp[7 - k];
    }
#else
    memcpy(p, &x, 8);
#endif
}

/* The double at p (8 little-endian bytes). */
static inline double
avro_get_double(const unsigned char *p)
{
    double x;
#if PY_BIG_ENDIAN
    unsigned char tmp[8];
    int k;
    for (k = 0; k < 8; k++) {
        tmp[k] = p[7 - k];
    }
    memcpy(&x, tmp, 8);
#else
    memcpy(&x, p, 8);
#endif
    return x;
}

/* Both extensions build NamedTuple instances (decoded records, ladder levels,
 * runner books) by allocating the tuple and filling its slots, bypassing
 * tuple.__new__.  From CPython 3.14 a tuple caches its hash in ob_hash, -1
 * meaning "not computed yet"; tuple.__new__ sets it after tp_alloc (which
 * zeroes it, and a zero would be returned as the hash).  Do the same. */
static inline void
avro_tuple_reset_hash(PyObject *t)
{
#if PY_VERSION_HEX >= 0x030E0000
    ((PyTupleObject *)t)->ob_hash = -1;
#else
    (void)t;
#endif
}

#endif /* TICKTAPE_AVRO_BYTES_H */
