/* Entries that take operands by address: rows_at(), cols_at(), taps_at() and maxpool_at(),
 * for pointwise.nn's inference calls on torch tensors, whose shapes and strides the caller
 * checked once per layer and whose data pointers it reads per call. At batch 1 (16x16
 * 64->64) the kernels' call takes ~18 us on two threads; a NumPy view of each operand to pass
 * it as a buffer took 2.2 us (the weight's transposed view 4.8), a data pointer 0.2. The
 * checks left here are the ones a pointer needs (pw_address): non-NULL, aligned, sizes
 * positive. */
#include "pointwise.h"

/* rows_at(threads, openmp, act, x, ldx, grid, w, ldw, wt, y, ldy, bias, M, K, N,
 *         residual=0, ldr=0) -> bool:
 * as rows(): x's M rows ldx floats apart, or with grid = (Ho, Wo, sn, sh, sw) (Ho > 0) the
 * pixels of an (N, Ho, Wo, K) view; w (K, N) with rows ldw apart, or wt: columns ldw apart;
 * y's rows ldy apart; bias 0 for none; residual (M, N) rows ldr apart, 0 for none. */
PyObject *pw_py_rows_at(PyObject *self, PyObject *args) {
    (void)self;
    int threads, openmp, act, wt, ok = 0;
    unsigned long long xa, wa, ya, ba, ra = 0;
    Py_ssize_t ldx, ldw, ldy, M, K, N, g[5], ldr = 0;
    if (!PyArg_ParseTuple(args, "iiiKn(nnnnn)KnpKnKnnn|Kn", &threads, &openmp, &act, &xa, &ldx,
                          &g[0], &g[1], &g[2], &g[3], &g[4], &wa, &ldw, &wt, &ya, &ldy, &ba,
                          &M, &K, &N, &ra, &ldr))
        return NULL;
    if (!pw_check_options(act, openmp)) return NULL;
#ifdef PW_X86
    const isa_t *isa = pw_current();
    const float *X, *W, *Y, *B, *R;
    grid_t grid = {g[0], g[1], g[2], g[3], g[4]};
    if (isa != NULL && pw_address(xa, 0, &X) && pw_address(wa, 0, &W) &&
        pw_address(ya, 0, &Y) && pw_address(ba, 1, &B) && pw_address(ra, 1, &R) && M > 0 &&
        K > 0 && N > 0 && ldx >= 0 &&
        ldw > 0 && ldy >= N && (R == NULL || ldr >= N) &&
        (g[0] == 0 || g[0] * g[1] * (M / (g[0] * g[1])) == M)) {
        rows_job j = {isa, M, K, N, ldx, ldw, ldy, X, W, B, (float *)Y, act, 0,
                      g[0] > 0 ? &grid : NULL, R, R ? ldr : 0, wt};
        ok = pw_run_released(pw_rows_part, &j, (long long)M * K * N, threads, &j.failed, openmp);
    }
#endif
    if (ok < 0) return PyErr_NoMemory();
    return PyBool_FromLong(ok);
}

/* cols_at(threads, openmp, act, w, ldw, x, xn, xc, y, yn, yf, bias, N, P, K, F) -> bool:
 * as cols(): y[n] (F, P) = act(w (F, K) @ x[n] (K, P) + bias), strides in floats. */
PyObject *pw_py_cols_at(PyObject *self, PyObject *args) {
    (void)self;
    int threads, openmp, act, ok = 0;
    unsigned long long wa, xa, ya, ba;
    Py_ssize_t ldw, xn, xc, yn, yf, N, P, K, F;
    if (!PyArg_ParseTuple(args, "iiiKnKnnKnnKnnnn", &threads, &openmp, &act, &wa, &ldw, &xa, &xn,
                          &xc, &ya, &yn, &yf, &ba, &N, &P, &K, &F))
        return NULL;
    if (!pw_check_options(act, openmp)) return NULL;
#ifdef PW_X86
    const isa_t *isa = pw_current();
    const float *X, *W, *Y, *B;
    if (isa != NULL && pw_address(xa, 0, &X) && pw_address(wa, 0, &W) &&
        pw_address(ya, 0, &Y) && pw_address(ba, 1, &B) && N > 0 && P > 0 && K > 0 && F > 0 &&
        ldw >= K && xc >= P &&
        yf >= P) {
        cols_job j = {isa, N, P, K, F, ldw, xn, xc, yn, yf, W, X, B, (float *)Y, act, 0};
        ok = pw_run_released(pw_cols_part, &j, (long long)N * P * K * F, threads, &j.failed,
                             openmp);
    }
#endif
    if (ok < 0) return PyErr_NoMemory();
    return PyBool_FromLong(ok);
}

/* taps_at(threads, openmp, act, x, (N, H, W, C, sn, sh, sw), w, (si, sj, sc, sf), F, y, ldy,
 *         bias, residual, ldr, geometry, packed=0) -> bool:
 * as taps() without packed: x (N, H, W, C), channels unit stride, pixels sn, sh, sw floats
 * apart; w's element (i, j, c, f) at w + i·si + j·sj + c·sc + f·sf (torch's OIHW weight read
 * through its HWIO view, say); y (M, F) rows ldy apart, M = N·Ho·Wo; bias 0 for none;
 * residual (M, F) rows ldr apart, 0 for none; geometry = (KH, KW, sy, sx, py, px, dy, dx,
 * Ho, Wo), py and px the padding at the top and left. packed: w is taps_pack's layout of
 * the weight (taps_packed_size(K, F) floats), read as it is; the strides are then unused. */
PyObject *pw_py_taps_at(PyObject *self, PyObject *args) {
    (void)self;
    int threads, openmp, act, packed = 0, ok = 0;
    unsigned long long xa, wa, ya, ba, ra;
    Py_ssize_t x[7], ws[4], F, ldy, ldr, g[10];
    if (!PyArg_ParseTuple(args, "iiiK(nnnnnnn)K(nnnn)nKnKKn(nnnnnnnnnn)|p", &threads, &openmp,
                          &act, &xa, &x[0], &x[1], &x[2], &x[3], &x[4], &x[5], &x[6], &wa,
                          &ws[0], &ws[1], &ws[2], &ws[3], &F, &ya, &ldy, &ba, &ra, &ldr, &g[0],
                          &g[1], &g[2], &g[3], &g[4], &g[5], &g[6], &g[7], &g[8], &g[9],
                          &packed))
        return NULL;
    if (!pw_check_options(act, openmp)) return NULL;
    int sizes = x[0] > 0 && x[1] > 0 && x[2] > 0 && x[3] > 0 && F > 0 && ldy >= F;
    for (int i = 0; i < 10; i++) sizes = sizes && g[i] >= (i == 4 || i == 5 ? 0 : 1);
#ifdef PW_X86
    const isa_t *isa = pw_current();
    const float *X, *W, *Y, *B, *R;
    if (isa != NULL && sizes && pw_address(xa, 0, &X) && pw_address(wa, 0, &W) &&
        pw_address(ya, 0, &Y) && pw_address(ba, 1, &B) && pw_address(ra, 1, &R) &&
        (R == NULL || ldr >= F)) {
        const idx K = g[0] * g[1] * x[3], M = x[0] * g[8] * g[9];
        taps_job j = {isa, x[0], x[1], x[2], x[3], x[4], x[5], x[6], g[0], g[1], F, g[2],
                      g[3], g[4], g[5], g[6], g[7], g[8], g[9], X, W, B, R, R ? ldr : 0,
                      (float *)Y, ldy, act, 0};
        taps_pack_job p = {isa, W, K, F, 0, NULL, g[1], x[3], ws[0], ws[1], ws[2], ws[3], NULL};
        /* unless packed, each thread packs the panels it computes, as it goes (taps.c) */
        if (!packed) j.pack = &p;
        ok = pw_run_released(pw_taps_part, &j, (long long)M * K * F, threads, &j.failed, openmp);
    }
#else
    (void)sizes;
#endif
    if (ok < 0) return PyErr_NoMemory();
    return PyBool_FromLong(ok);
}

/* maxpool_at(threads, openmp, x, (N, H, W, C, sn, sh, sw), y, ldy, (KH, KW, sy, sx, py, px,
 *            Ho, Wo)) -> bool: y (M, C) rows ldy apart, M = N·Ho·Wo, the max over each
 * window of x (N, H, W, C), channels unit stride, pixels sn, sh, sw floats apart; py and px
 * the padding at the top and left. */
PyObject *pw_py_maxpool_at(PyObject *self, PyObject *args) {
    (void)self;
    int threads, openmp, ok = 0;
    unsigned long long xa, ya;
    Py_ssize_t x[7], ldy, g[8];
    if (!PyArg_ParseTuple(args, "iiK(nnnnnnn)Kn(nnnnnnnn)", &threads, &openmp, &xa, &x[0],
                          &x[1], &x[2], &x[3], &x[4], &x[5], &x[6], &ya, &ldy, &g[0], &g[1],
                          &g[2], &g[3], &g[4], &g[5], &g[6], &g[7]))
        return NULL;
    if (!pw_check_options(0, openmp)) return NULL;
    int sizes = x[0] > 0 && x[1] > 0 && x[2] > 0 && x[3] > 0 && ldy >= x[3];
    for (int i = 0; i < 8; i++) sizes = sizes && g[i] >= (i == 4 || i == 5 ? 0 : 1);
    /* every window meets the image: padding under the window, as torch requires */
    sizes = sizes && g[4] < g[0] && g[5] < g[1];
#ifdef PW_X86
    const isa_t *isa = pw_current();
    const float *X, *Y;
    if (isa != NULL && sizes && pw_address(xa, 0, &X) && pw_address(ya, 0, &Y)) {
        pool_job j = {isa, x[0], x[1], x[2], x[3], x[4], x[5], x[6], g[0], g[1], g[2], g[3],
                      g[4], g[5], g[6], g[7], X, (float *)Y, ldy};
        /* about the work of a multiply-add per input read, for the threads' threshold */
        const long long work = (long long)x[0] * g[6] * g[7] * x[3] * g[0] * g[1];
        atomic_int failed = 0;  /* nothing allocates: never set */
        ok = pw_run_released(pw_pool_part, &j, work, threads, &failed, openmp);
    }
#else
    (void)sizes;
#endif
    return PyBool_FromLong(ok);
}
