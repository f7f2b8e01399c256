/* The Python interface of the kernels: the module pointwise.kernels._kernel.
 *
 * rows(threads, x, w, y, bias, act) and cols(threads, w, x, y, bias, act) take NumPy arrays
 * (any object with the buffer protocol) and return True once y holds the result, or False,
 * having written nothing, when an operand is not something the kernels address directly:
 * not float32 in native byte order, misaligned, a negative stride or a non-unit stride
 * along the contiguous axis, a zero size, shapes that do not fit together, or an output
 * that may overlap an input. The caller then computes the call its own way. */
#include "pointwise.h"

#include <string.h>
#ifdef PW_X86
#include <pthread.h>
#endif

/* The kernels' instruction set: the widest the CPU has (AVX-512, else AVX2 with FMA), or what
 * select() chose. */
static const isa_t *current;

/* A float32 buffer of ndim axes (-1: 2 or 4), non-negative strides of whole elements, and
 * with unit_last, unit stride on its last axis; 0 (released) otherwise. */
static int view_of(PyObject *obj, Py_buffer *v, int ndim, int writable, int unit_last) {
    if (PyObject_GetBuffer(obj, v, PyBUF_STRIDED_RO | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0)) != 0) {
        PyErr_Clear();
        return 0;
    }
    if (ndim < 0) ndim = v->ndim == 4 ? 4 : 2;  /* x of rows: a matrix or an NHWC view */
    int ok = v->ndim == ndim && v->itemsize == 4 && v->format != NULL &&
             strcmp(v->format, "f") == 0 && ((uintptr_t)v->buf & 3) == 0;
    for (int d = 0; ok && d < ndim; d++) {
        ok = v->shape[d] > 0 && v->strides[d] >= 0 && v->strides[d] % 4 == 0;
        if (unit_last && d == ndim - 1) ok = ok && v->strides[d] == 4;
    }
    if (!ok) PyBuffer_Release(v);
    return ok;
}

/* Element strides of a float32 buffer with unit stride on its last axis, or 0. */
int pw_float_view(PyObject *obj, Py_buffer *v, int ndim, int writable) {
    return view_of(obj, v, ndim, writable, 1);
}

/* A (K, N) float32 matrix with unit stride along N, or (*wt = 1) along K: torch's (F, C)
 * weight seen as (C, F), which the rows driver packs from in place. */
static int matrix_view(PyObject *obj, Py_buffer *v, int *wt) {
    if (!view_of(obj, v, 2, 0, 0)) return 0;
    *wt = v->strides[1] != 4;
    if (!*wt || v->strides[0] == 4) return 1;
    PyBuffer_Release(v);
    return 0;
}

/* The bytes a view spans (strides are non-negative here). */
static void span(const Py_buffer *v, uintptr_t *lo, uintptr_t *hi) {
    uintptr_t end = (uintptr_t)v->buf + (uintptr_t)v->itemsize;
    for (int d = 0; d < v->ndim; d++) end += (uintptr_t)(v->shape[d] - 1) * (uintptr_t)v->strides[d];
    *lo = (uintptr_t)v->buf;
    *hi = end;
}

/* Whether the output (views[out]) may share memory with any other view: by their bounds, as
 * numpy.may_share_memory does. The kernels write the output while they read the inputs. */
int pw_overlaps(const Py_buffer *views, int n, int out) {
    uintptr_t olo, ohi, lo, hi;
    span(&views[out], &olo, &ohi);
    for (int i = 0; i < n; i++) {
        if (i == out) continue;
        span(&views[i], &lo, &hi);
        if (lo < ohi && olo < hi) return 1;
    }
    return 0;
}

void pw_release(Py_buffer *views, int n) {
    for (int i = 0; i < n; i++) PyBuffer_Release(&views[i]);
}

/* Below this many multiply-adds a call runs on the calling thread alone: waking a pool
 * thread that has gone to sleep would cost more than it saves. */
#define PARALLEL_MIN_MACS (1LL << 20)

/* An act code the kernels know, and a bound libgomp if the call asks to run on it. */
int pw_check_options(int act, int openmp) {
#ifdef PW_X86
    const int bound = pw_openmp_bound();
#else
    const int bound = 0;
#endif
    if (openmp && !bound) {
        PyErr_SetString(PyExc_RuntimeError, "expected openmp() to have bound a loaded libgomp "
                        "before a call with openmp=True, but none is bound");
        return 0;
    }
    if (act < 0 || act > 2) {
        PyErr_Format(PyExc_ValueError, "expected act 0 (none), 1 (relu) or 2 (relu6), but got %d", act);
        return 0;
    }
    return 1;
}

/* rows(threads, x, w, y, bias, act, residual=None, openmp=False) and
 * cols(threads, w, x, y, bias, act, openmp=False); res is NULL for cols. */
static int parse(PyObject *args, int *threads, PyObject **a, PyObject **b, PyObject **y,
                 PyObject **bias, int *act, PyObject **res, int *openmp) {
    *openmp = 0;
    if (res != NULL) {
        *res = Py_None;
        if (!PyArg_ParseTuple(args, "iOOOOi|Op", threads, a, b, y, bias, act, res, openmp)) return 0;
    } else if (!PyArg_ParseTuple(args, "iOOOOi|p", threads, a, b, y, bias, act, openmp)) {
        return 0;
    }
    return pw_check_options(*act, *openmp);
}

#ifdef PW_X86
/* Run a job's parts with the GIL released, on the pool when it has at least
 * PARALLEL_MIN_MACS multiply-adds. 1 when done, -1 when a part ran out of memory. */
int pw_run_released(part_fn fn, void *job, long long macs, int threads, atomic_int *failed,
                        int openmp) {
    const int parts = macs >= PARALLEL_MIN_MACS ? threads : 1;
    Py_BEGIN_ALLOW_THREADS
    if (openmp)
        pw_run_parts_openmp(fn, job, parts);
    else
        pw_run_parts(fn, job, parts);
    Py_END_ALLOW_THREADS
    return atomic_load(failed) ? -1 : 1;
}
#endif

/* Release the n views and answer: True (done), False (declined) or MemoryError. */
PyObject *pw_answer(Py_buffer *views, int n, int ok) {
    pw_release(views, n);
    if (ok < 0) return PyErr_NoMemory();
    return PyBool_FromLong(ok);
}

const isa_t *pw_current(void) { return current; }

static PyObject *py_isa(PyObject *self, PyObject *args) {
    (void)self; (void)args;
    if (current == NULL) Py_RETURN_NONE;
    return PyUnicode_FromString(current->name);
}

static PyObject *py_select(PyObject *self, PyObject *args) {
    (void)self;
    const char *name;
    if (!PyArg_ParseTuple(args, "s", &name)) return NULL;
    if (strcmp(name, "none") == 0) {  /* back to NumPy's BLAS */
        current = NULL;
        Py_RETURN_TRUE;
    }
    const isa_t *isa = pw_isa_named(name);
    if (isa != NULL) current = isa;
    return PyBool_FromLong(isa != NULL);
}

static PyObject *py_rows(PyObject *self, PyObject *args) {
    (void)self;
    int threads, act, openmp, n = 0, ok = 0, wt = 0;
    PyObject *xo, *wo, *yo, *bo, *ro;
    /* x (M, K) or (N, Ho, Wo, K) with M = N·Ho·Wo, w (K, N) row- or column-major, y (M, N),
     * bias (N,) or absent, residual (M, N) or absent */
    Py_buffer v[5];
    if (!parse(args, &threads, &xo, &wo, &yo, &bo, &act, &ro, &openmp)) return NULL;
#ifdef PW_X86
    const isa_t *isa = current;
    if (isa == NULL || !pw_float_view(xo, &v[n++], -1, 0) || !matrix_view(wo, &v[n++], &wt) ||
        !pw_float_view(yo, &v[n++], 2, 1) || (bo != Py_None && !pw_float_view(bo, &v[n++], 1, 0)) ||
        (ro != Py_None && !pw_float_view(ro, &v[n++], 2, 0))) {
        pw_release(v, n - 1);
        Py_RETURN_FALSE;
    }
    const Py_buffer *rv = ro == Py_None ? NULL : &v[n - 1];
    const int grid_x = v[0].ndim == 4;
    const idx K = v[0].shape[v[0].ndim - 1], N = v[1].shape[1];
    const idx M = grid_x ? v[0].shape[0] * v[0].shape[1] * v[0].shape[2] : v[0].shape[0];
    grid_t grid = {0, 0, 0, 0, 0};
    if (grid_x)
        grid = (grid_t){v[0].shape[1], v[0].shape[2], v[0].strides[0] / 4, v[0].strides[1] / 4,
                        v[0].strides[2] / 4};
    if (v[1].shape[0] == K && v[2].shape[0] == M && v[2].shape[1] == N &&
        (bo == Py_None || v[3].shape[0] == N) &&
        (rv == NULL || (rv->shape[0] == M && rv->shape[1] == N)) && !pw_overlaps(v, n, 2)) {
        rows_job j = {isa, M, K, N, grid_x ? 0 : v[0].strides[0] / 4, v[1].strides[wt] / 4,
                      v[2].strides[0] / 4, v[0].buf, v[1].buf,
                      bo == Py_None ? NULL : v[3].buf, v[2].buf, act, 0,
                      grid_x ? &grid : NULL, rv ? rv->buf : NULL, rv ? rv->strides[0] / 4 : 0, wt};
        ok = pw_run_released(pw_rows_part, &j, (long long)M * K * N, threads, &j.failed, openmp);
    }
#endif
    return pw_answer(v, n, ok);
}

static PyObject *py_cols(PyObject *self, PyObject *args) {
    (void)self;
    int threads, act, openmp, n = 0, ok = 0;
    PyObject *wo, *xo, *yo, *bo;
    Py_buffer v[4];  /* w (F, K), x (N, K, P), y (N, F, P), bias (F,) */
    if (!parse(args, &threads, &wo, &xo, &yo, &bo, &act, NULL, &openmp)) return NULL;
#ifdef PW_X86
    const isa_t *isa = current;
    if (isa == NULL || !pw_float_view(wo, &v[n++], 2, 0) || !pw_float_view(xo, &v[n++], 3, 0) ||
        !pw_float_view(yo, &v[n++], 3, 1) || (bo != Py_None && !pw_float_view(bo, &v[n++], 1, 0))) {
        pw_release(v, n - 1);
        Py_RETURN_FALSE;
    }
    const idx F = v[0].shape[0], K = v[0].shape[1];
    const idx N = v[1].shape[0], P = v[1].shape[2];
    if (v[1].shape[1] == K && v[2].shape[0] == N && v[2].shape[1] == F && v[2].shape[2] == P &&
        (bo == Py_None || v[3].shape[0] == F) && !pw_overlaps(v, n, 2)) {
        cols_job j = {isa, N, P, K, F, v[0].strides[0] / 4, v[1].strides[0] / 4, v[1].strides[1] / 4,
                      v[2].strides[0] / 4, v[2].strides[1] / 4, v[0].buf, v[1].buf,
                      bo == Py_None ? NULL : v[3].buf, v[2].buf, act, 0};
        ok = pw_run_released(pw_cols_part, &j, (long long)N * P * K * F, threads, &j.failed, openmp);
    }
#endif
    return pw_answer(v, n, ok);
}

/* taps(threads, x, w, y, bias, act, residual, geometry, packed=False, openmp=False) */
static PyObject *py_taps(PyObject *self, PyObject *args) {
    (void)self;
    int threads, act, packed = 0, openmp = 0, n = 0, ok = 0;
    PyObject *xo, *wo, *yo, *bo, *ro;
    Py_ssize_t g[10];  /* KH, KW, sy, sx, py, px, dy, dx, Ho, Wo */
    /* x (N, H, W, C), w (KH, KW, C, F) or packed (1-D), y (M, F) with M = N·Ho·Wo, bias (F,)
     * or None, residual (M, F) or None */
    Py_buffer v[5];
    if (!PyArg_ParseTuple(args, "iOOOOiO(nnnnnnnnnn)|pp", &threads, &xo, &wo, &yo, &bo, &act, &ro,
                          &g[0], &g[1], &g[2], &g[3], &g[4], &g[5], &g[6], &g[7], &g[8], &g[9],
                          &packed, &openmp))
        return NULL;
    if (!pw_check_options(act, openmp)) return NULL;
    for (int i = 0; i < 10; i++)
        if (g[i] < (i == 4 || i == 5 ? 0 : 1)) {
            PyErr_Format(PyExc_ValueError, "expected kernel, stride, dilation and output sizes "
                         ">= 1 and padding >= 0, but got geometry[%d] = %zd", i, g[i]);
            return NULL;
        }
#ifdef PW_X86
    const isa_t *isa = current;
    if (isa == NULL || !pw_float_view(xo, &v[n++], 4, 0) ||
        !(packed ? pw_float_view(wo, &v[n++], 1, 0) : view_of(wo, &v[n++], 4, 0, 0)) ||
        !pw_float_view(yo, &v[n++], 2, 1) || (bo != Py_None && !pw_float_view(bo, &v[n++], 1, 0)) ||
        (ro != Py_None && !pw_float_view(ro, &v[n++], 2, 0))) {
        pw_release(v, n - 1);
        Py_RETURN_FALSE;
    }
    const Py_buffer *rv = ro == Py_None ? NULL : &v[n - 1];
    const idx N = v[0].shape[0], H = v[0].shape[1], W = v[0].shape[2], C = v[0].shape[3];
    const idx M = v[2].shape[0], F = v[2].shape[1], K = g[0] * g[1] * C;
    const idx size = pw_taps_packed_size(isa, K, F);
    const int w_fits = packed ? v[1].shape[0] == size
                              : v[1].shape[0] == g[0] && v[1].shape[1] == g[1] &&
                                    v[1].shape[2] == C && v[1].shape[3] == F;
    if (w_fits && M == N * g[8] * g[9] && (bo == Py_None || v[3].shape[0] == F) &&
        (rv == NULL || (rv->shape[0] == M && rv->shape[1] == F)) && !pw_overlaps(v, n, 2)) {
        taps_job j = {isa, N, H, W, C, v[0].strides[0] / 4, v[0].strides[1] / 4,
                      v[0].strides[2] / 4, g[0], g[1], F, g[2], g[3], g[4], g[5], g[6], g[7],
                      g[8], g[9], v[0].buf, v[1].buf, bo == Py_None ? NULL : v[3].buf,
                      rv ? rv->buf : NULL, rv ? rv->strides[0] / 4 : 0, v[2].buf,
                      v[2].strides[0] / 4, act, 0};
        /* without packed, each thread packs the panels it computes, as it goes (taps.c) */
        const Py_ssize_t *st = v[1].strides;  /* (KH, KW, C, F), any strides */
        taps_pack_job p = {isa, v[1].buf, K, F, 0, NULL, g[1], C, st[0] / 4, st[1] / 4,
                           st[2] / 4, st[3] / 4, NULL};
        if (!packed) j.pack = &p;
        ok = pw_run_released(pw_taps_part, &j, (long long)M * K * F, threads, &j.failed, openmp);
    }
#endif
    return pw_answer(v, n, ok);
}

/* taps_pack(w, out, taps=1) -> bool: w (K, F) rows of HWIO weights, K = taps * C, out
 * (taps_packed_size(K, F),); the panels' width depends on the taps (taps.c). */
static PyObject *py_taps_pack(PyObject *self, PyObject *args) {
    (void)self;
    int n = 0, ok = 0;
    Py_ssize_t taps = 1;
    PyObject *wo, *oo;
    Py_buffer v[2];
    if (!PyArg_ParseTuple(args, "OO|n", &wo, &oo, &taps)) return NULL;
#ifdef PW_X86
    const isa_t *isa = current;
    if (isa == NULL || !pw_float_view(wo, &v[n++], 2, 0) || !pw_float_view(oo, &v[n++], 1, 1)) {
        pw_release(v, n - 1);
        Py_RETURN_FALSE;
    }
    const idx K = v[0].shape[0], F = v[0].shape[1];
    if (taps >= 1 && K % taps == 0 && v[1].shape[0] == pw_taps_packed_size(isa, K, F) &&
        !pw_overlaps(v, n, 1)) {
        const idx ldw = v[0].strides[0] / 4, C = K / taps;
        taps_pack_job p = {isa, v[0].buf, K, F, ldw, v[1].buf};
        if (taps > 1)  /* tap t's C rows from row t * C on: (taps, 1, C, F) */
            p = (taps_pack_job){isa, v[0].buf, K, F, 0, v[1].buf, 1, C, C * ldw, 0, ldw, 1};
        Py_BEGIN_ALLOW_THREADS
        pw_taps_pack_part(&p, 0, 1);
        Py_END_ALLOW_THREADS
        ok = 1;
    }
#endif
    return pw_answer(v, n, ok);
}

static PyObject *py_taps_packed_size(PyObject *self, PyObject *args) {
    (void)self;
    Py_ssize_t K, F;
    if (!PyArg_ParseTuple(args, "nn", &K, &F)) return NULL;
#ifdef PW_X86
    if (current != NULL) return PyLong_FromSsize_t(pw_taps_packed_size(current, K, F));
#endif
    Py_RETURN_NONE;
}

/* depthwise(threads, x, w, y, bias, act, stride, openmp=False): x (N, H, W, C), w (3, 3, C)
 * contiguous, y (M, C) with M = N·Ho·Wo, bias (C,) or None; padding 1. */
static PyObject *py_depthwise(PyObject *self, PyObject *args) {
    (void)self;
    int threads, act, stride, openmp = 0, n = 0, ok = 0;
    PyObject *xo, *wo, *yo, *bo;
    Py_buffer v[4];
    if (!PyArg_ParseTuple(args, "iOOOOii|p", &threads, &xo, &wo, &yo, &bo, &act, &stride, &openmp))
        return NULL;
    if (!pw_check_options(act, openmp)) return NULL;
    if (stride != 1 && stride != 2) {
        PyErr_Format(PyExc_ValueError, "expected stride 1 or 2, but got %d", stride);
        return NULL;
    }
#ifdef PW_X86
    const isa_t *isa = current;
    if (isa == NULL || !pw_float_view(xo, &v[n++], 4, 0) || !pw_float_view(wo, &v[n++], 3, 0) ||
        !pw_float_view(yo, &v[n++], 2, 1) || (bo != Py_None && !pw_float_view(bo, &v[n++], 1, 0))) {
        pw_release(v, n - 1);
        Py_RETURN_FALSE;
    }
    const idx N = v[0].shape[0], H = v[0].shape[1], W = v[0].shape[2], C = v[0].shape[3];
    const idx Ho = (H - 1) / stride + 1, Wo = (W - 1) / stride + 1;
    const int w_fits = v[1].shape[0] == 3 && v[1].shape[1] == 3 && v[1].shape[2] == C &&
                       v[1].strides[1] == 4 * C && v[1].strides[0] == 12 * C;
    if (w_fits && v[2].shape[0] == N * Ho * Wo && v[2].shape[1] == C &&
        (bo == Py_None || v[3].shape[0] == C) && !pw_overlaps(v, n, 2)) {
        dw_job j = {isa, N, H, W, C, v[0].strides[0] / 4, v[0].strides[1] / 4,
                    v[0].strides[2] / 4, stride, Ho, Wo, v[0].buf, v[1].buf,
                    bo == Py_None ? NULL : v[3].buf, v[2].buf, v[2].strides[0] / 4, act, 0};
        ok = pw_run_released(pw_dw_part, &j, (long long)N * Ho * Wo * C * 9, threads, &j.failed,
                          openmp);
    }
#endif
    return pw_answer(v, n, ok);
}

static PyObject *py_openmp(PyObject *self, PyObject *args) {
    (void)self;
    const char *path;
    if (!PyArg_ParseTuple(args, "s", &path)) return NULL;
#ifdef PW_X86
    return PyBool_FromLong(pw_bind_openmp(path));
#else
    Py_RETURN_FALSE;
#endif
}

static PyObject *py_share_blas(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long address;
    int on;
    if (!PyArg_ParseTuple(args, "Kp", &address, &on)) return NULL;
    if (address == 0) {
        PyErr_SetString(PyExc_ValueError, "expected the address of OpenBLAS's "
                        "set_threads_callback_function, but got 0");
        return NULL;
    }
#ifdef PW_X86
    pw_share_blas((void *)(uintptr_t)address, on);
    Py_RETURN_TRUE;
#else
    Py_RETURN_FALSE;
#endif
}

static PyMethodDef methods[] = {
    {"isa", py_isa, METH_NOARGS,
     "The kernels' instruction set, 'avx512' or 'avx2', or None when none is in use."},
    {"select", py_select, METH_VARARGS,
     "select(name) -> bool: use 'avx512' or 'avx2' from now on, if this CPU runs it, or\n"
     "'none' (the kernels then decline every call)."},
    {"rows", py_rows, METH_VARARGS,
     "rows(threads, x, w, y, bias, act, residual=None, openmp=False) -> bool:\n"
     "y (M, N) = act(x (M, K) @ w (K, N) + bias + residual (M, N)); w may be column-major\n"
     "(torch's (F, C) weight, transposed); x may also be an\n"
     "(N, Ho, Wo, K) view, its pixels taken in order as the M rows. openmp: run on the team\n"
     "of the libgomp that openmp() bound."},
    {"cols", py_cols, METH_VARARGS,
     "cols(threads, w, x, y, bias, act, openmp=False) -> bool:\n"
     "y[n] (F, P) = act(w (F, K) @ x[n] (K, P) + bias)."},
    {"taps", py_taps, METH_VARARGS,
     "taps(threads, x, w, y, bias, act, residual, geometry, packed=False, openmp=False) -> bool:\n"
     "the k x k convolution y (M, F) = act(sum over taps of shifted x (N, H, W, C) @ w[tap] +\n"
     "bias + residual (M, F)), M = N·Ho·Wo; geometry = (KH, KW, sy, sx, py, px, dy, dx, Ho,\n"
     "Wo), padding at the top and left; w (KH, KW, C, F) HWIO with any strides (packed for\n"
     "the call, in parallel), or packed by taps_pack."},
    {"taps_pack", py_taps_pack, METH_VARARGS,
     "taps_pack(w, out, taps=1) -> bool: w (K, F), the HWIO weight as K = KH·KW·C rows,\n"
     "into out (taps_packed_size(K, F),), the layout taps(..., packed=True) reads for a\n"
     "weight of `taps` taps (K = taps * C)."},
    {"taps_packed_size", py_taps_packed_size, METH_VARARGS,
     "taps_packed_size(K, F) -> int | None: floats of a packed weight, None without kernels."},
    {"depthwise", py_depthwise, METH_VARARGS,
     "depthwise(threads, x, w, y, bias, act, stride, openmp=False) -> bool:\n"
     "the depthwise 3x3 convolution, padding 1, stride 1 or 2: y (M, C) = act(sum over taps\n"
     "of shifted x (N, H, W, C) * w[tap] + bias), w (3, 3, C), M = N·Ho·Wo."},
    {"rows_at", pw_py_rows_at, METH_VARARGS,
     "rows_at(threads, openmp, act, x, ldx, grid, w, ldw, wt, y, ldy, bias, M, K, N,\n"
     "residual=0, ldr=0) -> bool: rows() on operands given by address and strides (in\n"
     "floats); see module_at.c."},
    {"cols_at", pw_py_cols_at, METH_VARARGS,
     "cols_at(threads, openmp, act, w, ldw, x, xn, xc, y, yn, yf, bias, N, P, K, F) -> bool:\n"
     "cols() on operands given by address and strides (in floats); see module_at.c."},
    {"taps_at", pw_py_taps_at, METH_VARARGS,
     "taps_at(threads, openmp, act, x, (N, H, W, C, sn, sh, sw), w, (si, sj, sc, sf), F, y,\n"
     "ldy, bias, residual, ldr, geometry) -> bool: taps() on operands given by address and\n"
     "strides (in floats); see module_at.c."},
    {"linear_at", pw_py_linear_at, METH_VARARGS,
     "linear_at(threads, openmp, x, ldx, w, ldw, y, ldy, bias, N, C, F) -> bool: y (N, F) =\n"
     "x (N, C) @ w (F, C)^T + bias, w read in place; see module_head.c."},
    {"mean_at", pw_py_mean_at, METH_VARARGS,
     "mean_at(threads, openmp, x, (N, H, W, C, sn, sh, sw), y, ldy) -> bool: y (N, C) = the\n"
     "mean of x (N, H, W, C) over its pixels, in float64; see module_head.c."},
    {"maxpool_at", pw_py_maxpool_at, METH_VARARGS,
     "maxpool_at(threads, openmp, x, (N, H, W, C, sn, sh, sw), y, ldy, (KH, KW, sy, sx, py,\n"
     "px, Ho, Wo)) -> bool: max pooling by address and strides (in floats); see module_at.c."},
    {"block", pw_py_block, METH_VARARGS,
     "block(threads, x, we, be, wd, bd, wp, bp, y, acts, stride, residual, transposed=False,\n"
     "openmp=False)\n"
     "-> bool: y (M, F) = act_p(act_d(dw3x3(act_e(x @ we + be)) + bd) @ wp + bp [+ x]),\n"
     "x (N, H, W, C), we (C, E) or None, wd (3, 3, E), wp (E, F), acts = (act_e, act_d,\n"
     "act_p), padding 1, stride 1 or 2; M = N·Ho·Wo; transposed: we (E, C), wp (F, E)."},
    {"moments", pw_py_moments, METH_VARARGS,
     "moments(threads, x, mean, scatter, segment, block, path=-1, openmp=False) -> bool:\n"
     "the float64 mean and scatter of the rows of x (M, C); see module_moments.c."},
    {"block_at", pw_py_block_at, METH_VARARGS,
     "block_at(threads, openmp, acts, stride, residual, x, (N, H, W, C, sn, sh, sw), we, be,\n"
     "wd, bd, wp, bp, E, F, y) -> bool: block() on operands given by address, the weights in\n"
     "torch's layouts; see module_blocks.c."},
    {"openmp", py_openmp, METH_VARARGS,
     "openmp(path) -> bool: bind to the libgomp at path if the process has loaded it (torch\n"
     "does), so that calls with openmp=True run on its threads; False: not loaded, nothing\n"
     "changed."},
    {"share_blas", py_share_blas, METH_VARARGS,
     "share_blas(setter, on) -> bool: with on, run OpenBLAS's threaded work on the kernels'\n"
     "pool, through OpenBLAS's set_threads_callback_function at address setter; without,\n"
     "give it back to OpenBLAS's own threads. False where the kernels have no pool."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernel", NULL, -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__kernel(void) {
    current = pw_isa_named("avx512");
    if (current == NULL) current = pw_isa_named("avx2");
#ifdef PW_X86
    static int registered = 0;
    if (!registered) {
        pthread_atfork(NULL, NULL, pw_pool_after_fork);
        pthread_atfork(NULL, NULL, pw_blas_after_fork);
        registered = 1;
    }
#endif
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "PARALLEL_MIN_MACS", (long)PARALLEL_MIN_MACS) != 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
