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

/* The kernels' instruction set: AVX-512 where the CPU has it, or what select() chose. */
static const isa_t *current;

/* Element strides of a float32 buffer with unit stride on its last axis, or 0. */
static int float_view(PyObject *obj, Py_buffer *v, int ndim, int writable) {
    if (PyObject_GetBuffer(obj, v, PyBUF_STRIDED_RO | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0)) != 0) {
        PyErr_Clear();
        return 0;
    }
    if (ndim < 0) ndim = v->ndim == 4 ? 4 : 2;  /* x of rows: a matrix or an NHWC view */
    int ok = v->ndim == ndim && v->itemsize == 4 && v->format != NULL &&
             strcmp(v->format, "f") == 0 && ((uintptr_t)v->buf & 3) == 0;
    for (int d = 0; ok && d < ndim; d++) {
        ok = v->shape[d] > 0 && v->strides[d] >= 0 && v->strides[d] % 4 == 0;
        if (d == ndim - 1) ok = ok && v->strides[d] == 4;
    }
    if (!ok) PyBuffer_Release(v);
    return ok;
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
static int overlaps(const Py_buffer *views, int n, int out) {
    uintptr_t olo, ohi, lo, hi;
    span(&views[out], &olo, &ohi);
    for (int i = 0; i < n; i++) {
        if (i == out) continue;
        span(&views[i], &lo, &hi);
        if (lo < ohi && olo < hi) return 1;
    }
    return 0;
}

static void release(Py_buffer *views, int n) {
    for (int i = 0; i < n; i++) PyBuffer_Release(&views[i]);
}

/* Below this many multiply-adds a call runs on the calling thread alone: waking a pool
 * thread that has gone to sleep would cost more than it saves. */
#define PARALLEL_MIN_MACS (1LL << 20)

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
#ifdef PW_X86
    const int bound = pw_openmp_bound();
#else
    const int bound = 0;
#endif
    if (*openmp && !bound) {
        PyErr_SetString(PyExc_RuntimeError, "expected openmp() to have bound a loaded libgomp "
                        "before a call with openmp=True, but none is bound");
        return 0;
    }
    if (*act < 0 || *act > 2) {
        PyErr_Format(PyExc_ValueError, "expected act 0 (none), 1 (relu) or 2 (relu6), but got %d", *act);
        return 0;
    }
    return 1;
}

#ifdef PW_X86
/* Run a job's parts with the GIL released, on the pool when it has at least
 * PARALLEL_MIN_MACS multiply-adds. 1 when done, -1 when a part ran out of memory. */
static int run_released(part_fn fn, void *job, long long macs, int threads, atomic_int *failed,
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
static PyObject *answer(Py_buffer *views, int n, int ok) {
    release(views, n);
    if (ok < 0) return PyErr_NoMemory();
    return PyBool_FromLong(ok);
}

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
    int threads, act, openmp, n = 0, ok = 0;
    PyObject *xo, *wo, *yo, *bo, *ro;
    /* x (M, K) or (N, Ho, Wo, K) with M = N·Ho·Wo, w (K, N), y (M, N), bias (N,) or absent,
     * residual (M, N) or absent */
    Py_buffer v[5];
    if (!parse(args, &threads, &xo, &wo, &yo, &bo, &act, &ro, &openmp)) return NULL;
#ifdef PW_X86
    const isa_t *isa = current;
    if (isa == NULL || !float_view(xo, &v[n++], -1, 0) || !float_view(wo, &v[n++], 2, 0) ||
        !float_view(yo, &v[n++], 2, 1) || (bo != Py_None && !float_view(bo, &v[n++], 1, 0)) ||
        (ro != Py_None && !float_view(ro, &v[n++], 2, 0))) {
        release(v, n - 1);
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
        (rv == NULL || (rv->shape[0] == M && rv->shape[1] == N)) && !overlaps(v, n, 2)) {
        rows_job j = {isa, M, K, N, grid_x ? 0 : v[0].strides[0] / 4, v[1].strides[0] / 4,
                      v[2].strides[0] / 4, v[0].buf, v[1].buf,
                      bo == Py_None ? NULL : v[3].buf, v[2].buf, act, 0,
                      grid_x ? &grid : NULL, rv ? rv->buf : NULL, rv ? rv->strides[0] / 4 : 0};
        ok = run_released(pw_rows_part, &j, (long long)M * K * N, threads, &j.failed, openmp);
    }
#endif
    return answer(v, n, ok);
}

static PyObject *py_cols(PyObject *self, PyObject *args) {
    (void)self;
    int threads, act, openmp, n = 0, ok = 0;
    PyObject *wo, *xo, *yo, *bo;
    Py_buffer v[4];  /* w (F, K), x (N, K, P), y (N, F, P), bias (F,) */
    if (!parse(args, &threads, &wo, &xo, &yo, &bo, &act, NULL, &openmp)) return NULL;
#ifdef PW_X86
    const isa_t *isa = current;
    if (isa == NULL || !float_view(wo, &v[n++], 2, 0) || !float_view(xo, &v[n++], 3, 0) ||
        !float_view(yo, &v[n++], 3, 1) || (bo != Py_None && !float_view(bo, &v[n++], 1, 0))) {
        release(v, n - 1);
        Py_RETURN_FALSE;
    }
    const idx F = v[0].shape[0], K = v[0].shape[1];
    const idx N = v[1].shape[0], P = v[1].shape[2];
    if (v[1].shape[1] == K && v[2].shape[0] == N && v[2].shape[1] == F && v[2].shape[2] == P &&
        (bo == Py_None || v[3].shape[0] == F) && !overlaps(v, n, 2)) {
        cols_job j = {isa, N, P, K, F, v[0].strides[0] / 4, v[1].strides[0] / 4, v[1].strides[1] / 4,
                      v[2].strides[0] / 4, v[2].strides[1] / 4, v[0].buf, v[1].buf,
                      bo == Py_None ? NULL : v[3].buf, v[2].buf, act, 0};
        ok = run_released(pw_cols_part, &j, (long long)N * P * K * F, threads, &j.failed, openmp);
    }
#endif
    return answer(v, n, ok);
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

static PyMethodDef methods[] = {
    {"isa", py_isa, METH_NOARGS,
     "The kernels' instruction set, 'avx512' or 'avx2', or None when none is in use."},
    {"select", py_select, METH_VARARGS,
     "select(name) -> bool: use 'avx512' or 'avx2' from now on, if this CPU runs it, or\n"
     "'none' (the kernels then decline every call)."},
    {"rows", py_rows, METH_VARARGS,
     "rows(threads, x, w, y, bias, act, residual=None, openmp=False) -> bool:\n"
     "y (M, N) = act(x (M, K) @ w (K, N) + bias + residual (M, N)); x may also be an\n"
     "(N, Ho, Wo, K) view, its pixels taken in order as the M rows. openmp: run on the team\n"
     "of the libgomp that openmp() bound."},
    {"cols", py_cols, METH_VARARGS,
     "cols(threads, w, x, y, bias, act, openmp=False) -> bool:\n"
     "y[n] (F, P) = act(w (F, K) @ x[n] (K, P) + bias)."},
    {"openmp", py_openmp, METH_VARARGS,
     "openmp(path) -> bool: bind to the libgomp at path if the process has loaded it (torch\n"
     "does), so that calls with openmp=True run on its threads; False: not loaded, nothing\n"
     "changed."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernel", NULL, -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__kernel(void) {
    current = pw_isa_named("avx512");
#ifdef PW_X86
    static int registered = 0;
    if (!registered) {
        pthread_atfork(NULL, NULL, pw_pool_after_fork);
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
