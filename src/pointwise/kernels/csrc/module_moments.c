/* The entry for the mean and scatter of pixel vectors (moments.c). */
#include "pointwise.h"

#include <stdlib.h>
#include <string.h>

/* A real buffer of ndim axes (-1: 2 or 3), float32 or float64 ("f", "d") in native order
 * (float64 only with f64 == NULL), non-negative strides of whole elements, no zero size; 0
 * (released) otherwise. */
static int real_view(PyObject *obj, Py_buffer *v, int ndim, int writable, int *f64) {
    int is64;
    if (f64 == NULL) f64 = &is64;
    if (PyObject_GetBuffer(obj, v, PyBUF_STRIDED_RO | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0)) != 0) {
        PyErr_Clear();
        return 0;
    }
    const char *f = v->format;
    if (ndim < 0) ndim = v->ndim == 3 || v->ndim == 4 ? v->ndim : 2;
    *f64 = f != NULL && strcmp(f, "d") == 0;
    int ok = v->ndim == ndim && f != NULL && (*f64 || (f64 != &is64 && strcmp(f, "f") == 0)) &&
             ((uintptr_t)v->buf % (uintptr_t)v->itemsize) == 0;
    for (int d = 0; ok && d < ndim; d++)
        ok = v->shape[d] > 0 && v->strides[d] >= 0 && v->strides[d] % v->itemsize == 0;
    if (!ok) PyBuffer_Release(v);
    return ok;
}

/* moments(threads, x, mean, scatter, segment, block, path=-1, openmp=False) -> bool:
 * mean (C,) and scatter (C, C) = (x - mean)^T (x - mean) of the rows of x (M, C), of
 * the N·P pixel vectors of channels-first images x (N, C, P), or of the N·H·P ones of
 * x (N, H, C, P) (rows of P pixels, such as a crop's); float32 or float64, any
 * non-negative strides; mean and scatter float64, unit stride along their last axis.
 * segment: rows that share a shift; block: rows packed at a time. path: -1 the kernels'
 * instruction set (the widest this CPU runs when none is selected), 0 portable C, 1 AVX2,
 * 2 AVX-512 (False if this CPU lacks it). */
PyObject *pw_py_moments(PyObject *self, PyObject *args) {
    (void)self;
    int threads, path = -1, openmp = 0, n = 0, ok = 0, f64;
    PyObject *xo, *mo, *so;
    Py_ssize_t segment, block;
    Py_buffer v[3];  /* x, mean, scatter */
    if (!PyArg_ParseTuple(args, "iOOOnn|ip", &threads, &xo, &mo, &so, &segment, &block, &path,
                          &openmp))
        return NULL;
    if (!pw_check_options(0, openmp)) return NULL;
    if (segment < 1 || block < 1 || path < -1 || path > 2) {
        PyErr_Format(PyExc_ValueError, "expected segment >= 1, block >= 1 and path -1, 0, 1 or "
                     "2, but got segment=%zd, block=%zd, path=%d", segment, block, path);
        return NULL;
    }
#ifdef PW_X86
    const isa_t *isa = pw_current();
    if (path < 0 && isa != NULL)
        path = strcmp(isa->name, "avx512") == 0 ? PW_MOMENTS_AVX512 : PW_MOMENTS_AVX2;
    else if (path < 0)  /* none selected (POINTWISE_NATIVE=0): the widest this CPU runs */
        path = pw_isa_named("avx512") ? PW_MOMENTS_AVX512
               : pw_isa_named("avx2") ? PW_MOMENTS_AVX2 : PW_MOMENTS_C;
    const int runs = path == PW_MOMENTS_C || (path == PW_MOMENTS_AVX2 && pw_isa_named("avx2")) ||
                     (path == PW_MOMENTS_AVX512 && pw_isa_named("avx512"));
    if (!runs) Py_RETURN_FALSE;
    if (!real_view(xo, &v[n++], -1, 0, &f64) || !real_view(mo, &v[n++], 1, 1, NULL) ||
        !real_view(so, &v[n++], 2, 1, NULL)) {
        pw_release(v, n - 1);
        Py_RETURN_FALSE;
    }
    const Py_ssize_t *sh = v[0].shape, *st = v[0].strides, e = v[0].itemsize;
    /* (M, C); (N, C, P): row m is pixel m % P of image m / P; (N, H, C, P): the N·H runs
     * of P pixels of channels-last images (a crop: x.transpose(0, 1, 3, 2)) */
    const int nd = v[0].ndim, c_at = nd == 4 ? 2 : 1;
    const idx C = sh[c_at], P = nd == 2 ? sh[0] : sh[nd - 1], H = nd == 4 ? sh[1] : 1;
    const idx M = nd == 2 ? P : sh[0] * H * P;
    if (v[1].shape[0] == C && v[1].strides[0] == 8 && v[2].shape[0] == C && v[2].shape[1] == C &&
        v[2].strides[1] == 8 && !pw_overlaps(v, 3, 1) && !pw_overlaps(v, 3, 2)) {
        const long long macs = (long long)M * C * (C + 1) / 2;
        const int parts = threads > 1 ? threads : 1;  /* at most: pw_run_released may use 1 */
        double *work = malloc(sizeof(double) * (size_t)(pw_moments_work(C) * parts));
        moments_job j = {path, f64, M, C, st[nd == 2 ? 0 : nd - 1] / e, st[c_at] / e, P,
                         nd == 2 ? 0 : st[0] / e, H, nd == 4 ? st[1] / e : 0, v[0].buf,
                         segment, block, work, 0, 1};
        ok = work == NULL ? -1
                          : pw_run_released(pw_moments_part, &j, macs, parts, &j.failed, openmp);
        if (ok > 0) pw_moments_reduce(&j, atomic_load(&j.parts), v[1].buf, v[2].buf, v[2].strides[0] / 8);
        free(work);
    }
#endif
    return pw_answer(v, n, ok);
}
