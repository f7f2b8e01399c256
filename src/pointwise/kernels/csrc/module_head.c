/* The head's entries, by address as module_at.c's: linear_at() and mean_at(), for
 * pointwise.nn's Linear and global average pool on torch tensors, whose shapes and strides
 * the caller checked once per layer. The checks left here are the ones a pointer needs. */
#include "pointwise.h"

/* linear_at(threads, openmp, x, ldx, w, ldw, y, ldy, bias, N, C, F) -> bool:
 * y (N, F) = x (N, C) @ w (F, C)^T + bias, rows ldx, ldw, ldy floats apart, channels unit
 * stride; bias 0 for none. */
PyObject *pw_py_linear_at(PyObject *self, PyObject *args) {
    (void)self;
    int threads, openmp, ok = 0;
    unsigned long long xa, wa, ya, ba;
    Py_ssize_t ldx, ldw, ldy, N, C, F;
    if (!PyArg_ParseTuple(args, "iiKnKnKnKnnn", &threads, &openmp, &xa, &ldx, &wa, &ldw, &ya,
                          &ldy, &ba, &N, &C, &F))
        return NULL;
    if (!pw_check_options(0, openmp)) return NULL;
#ifdef PW_X86
    const isa_t *isa = pw_current();
    const float *X, *W, *Y, *B;
    if (isa != NULL && pw_address(xa, 0, &X) && pw_address(wa, 0, &W) && pw_address(ya, 0, &Y) &&
        pw_address(ba, 1, &B) && N > 0 && C > 0 && F > 0 && ldx >= 0 && ldw >= C && ldy >= F) {
        linear_job j = {isa, N, C, F, ldx, ldw, ldy, X, W, B, (float *)Y, 0};
        ok = pw_run_released(pw_linear_part, &j, (long long)N * C * F, threads, &j.failed,
                             openmp);
    }
#endif
    return PyBool_FromLong(ok);
}

/* A float summed counts as this many multiply-adds towards the threshold of a parallel call:
 * a pool of 64 Ki floats or more runs on the threads. Right after MobileNetV2's body,
 * 7x7x1280, 2 threads against 1, medians of 25 (2026-12-03): N=8 114 against 164 us
 * (half the map is in the other core's cache either way); N=1 (63 Ki floats) 25 against 24. */
#define MEAN_COST 16LL

/* mean_at(threads, openmp, x, (N, H, W, C, sn, sh, sw), y, ldy) -> bool:
 * y (N, C) = the mean over the H x W pixels of x (N, H, W, C), channels unit stride, pixels
 * sn, sh, sw floats apart, summed in float64; y's rows ldy apart. */
PyObject *pw_py_mean_at(PyObject *self, PyObject *args) {
    (void)self;
    int threads, openmp, ok = 0;
    unsigned long long xa, ya;
    Py_ssize_t x[7], ldy;
    if (!PyArg_ParseTuple(args, "iiK(nnnnnnn)Kn", &threads, &openmp, &xa, &x[0], &x[1], &x[2],
                          &x[3], &x[4], &x[5], &x[6], &ya, &ldy))
        return NULL;
    if (!pw_check_options(0, openmp)) return NULL;
#ifdef PW_X86
    const isa_t *isa = pw_current();
    const float *X, *Y;
    if (isa != NULL && pw_address(xa, 0, &X) && pw_address(ya, 0, &Y) && x[0] > 0 && x[1] > 0 &&
        x[2] > 0 && x[3] > 0 && x[4] >= 0 && x[5] >= 0 && x[6] >= 0 && ldy >= x[3]) {
        mean_job j = {isa, x[0], x[1], x[2], x[3], x[4], x[5], x[6], X, (float *)Y, ldy, 0};
        ok = pw_run_released(pw_mean_part, &j, MEAN_COST * x[0] * x[1] * x[2] * x[3], threads,
                             &j.failed, openmp);
    }
#endif
    return PyBool_FromLong(ok);
}
