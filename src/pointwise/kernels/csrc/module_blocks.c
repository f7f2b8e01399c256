/* The Python entry of the fused blocks (blocks.c): block(...), with module.c's checks. It
 * answers False, having written nothing, for anything the kernels do not address directly,
 * as rows() does; the caller then runs the block layer by layer. */
#include "pointwise.h"

/* A packed weight of the calling thread stays between calls up to this size, as taps()'s. */
#define KEEP_BLOCK_PACKED_BYTES (16 << 20)

#ifdef PW_X86
/* An optional operand: None, or a view of ndim axes appended to v; its buffer, or NULL. */
static int optional(PyObject *o, Py_buffer *v, int *n, int ndim, int writable, void **buf) {
    *buf = NULL;
    if (o == Py_None) return 1;
    if (!pw_float_view(o, &v[*n], ndim, writable)) return 0;
    *buf = v[(*n)++].buf;
    return 1;
}

/* w (K, F) rows ldw apart, or with t torch's (F, K) storage, packed, in parallel, into the
 * calling thread's slot `slot`. */
static float *pack(const isa_t *isa, const Py_buffer *w, int t, int slot, int threads,
                   int openmp, atomic_int *failed) {
    const idx K = w->shape[t], F = w->shape[1 - t];
    float *out = pw_scratch(slot, (size_t)pw_taps_packed_size(isa, K, F));
    if (out == NULL) return NULL;
    taps_pack_job p = {isa, w->buf, K, F, w->strides[0] / 4, out};
    if (t) {  /* element (c, f) at f * ldw + c: one kernel tap of C = K rows, read transposed */
        p.KW = 1, p.C = K, p.sc = 1, p.sf = w->strides[0] / 4;
        p.ldw = 0;
    }
    return pw_run_released(pw_taps_pack_part, &p, (long long)K * F, threads, failed, openmp) > 0
               ? out : NULL;
}
#endif

/* block(threads, x, we, be, wd, bd, wp, bp, y, (act_e, act_d, act_p), stride, residual,
 * transposed=False, openmp=False): x (N, H, W, C), we (C, E) or None, wd (3, 3, E)
 * contiguous, wp (E, F), biases (E,), (E,), (F,) or None, y (M, F) with M = N·Ho·Wo; with
 * transposed, we (E, C) and wp (F, E), torch's storage, packed from it on every call. */
PyObject *pw_py_block(PyObject *self, PyObject *args) {
    (void)self;
    int threads, acts[3], stride, residual, t = 0, openmp = 0, n = 0, ok = 0;
    PyObject *xo, *weo, *beo, *wdo, *bdo, *wpo, *bpo, *yo;
    Py_buffer v[8];
    if (!PyArg_ParseTuple(args, "iOOOOOOOO(iii)ip|pp", &threads, &xo, &weo, &beo, &wdo, &bdo,
                          &wpo, &bpo, &yo, &acts[0], &acts[1], &acts[2], &stride, &residual,
                          &t, &openmp))
        return NULL;
    for (int i = 0; i < 3; i++)
        if (!pw_check_options(acts[i], openmp)) return NULL;
    if (stride != 1 && stride != 2) {
        PyErr_Format(PyExc_ValueError, "expected stride 1 or 2, but got %d", stride);
        return NULL;
    }
#ifdef PW_X86
    const isa_t *isa = pw_current();
    void *we, *be, *bd, *bp, *yb;
    int iwe = -1, ibe = -1, iwd, ibd = -1, iwp, ibp = -1;  /* their views' indices */
    if (isa == NULL || !pw_float_view(xo, &v[n++], 4, 0) ||
        ((iwe = n), !optional(weo, v, &n, 2, 0, &we)) ||
        ((ibe = n), !optional(beo, v, &n, 1, 0, &be)) ||
        ((iwd = n), !pw_float_view(wdo, &v[n++], 3, 0)) ||
        ((ibd = n), !optional(bdo, v, &n, 1, 0, &bd)) ||
        ((iwp = n), !pw_float_view(wpo, &v[n++], 2, 0)) ||
        ((ibp = n), !optional(bpo, v, &n, 1, 0, &bp)) || !optional(yo, v, &n, 2, 1, &yb) ||
        yb == NULL) {
        pw_release(v, n);
        Py_RETURN_FALSE;
    }
    const Py_buffer *x = &v[0], *wd = &v[iwd], *wp = &v[iwp], *y = &v[n - 1];
    const idx N = x->shape[0], H = x->shape[1], W = x->shape[2], C = x->shape[3];
    const idx E = wd->shape[2], F = y->shape[1];
    const idx Ho = (H - 1) / stride + 1, Wo = (W - 1) / stride + 1;
    const idx sn = x->strides[0] / 4, sh = x->strides[1] / 4, sw = x->strides[2] / 4;
    const int we_ok = !we || (v[iwe].shape[t] == C && v[iwe].shape[1 - t] == E);
    const int wp_ok = wp->shape[t] == E && wp->shape[1 - t] == F;
    const int shapes = we_ok && wp_ok && (we || E == C) &&
                       wd->shape[0] == 3 && wd->shape[1] == 3 && wd->strides[1] == 4 * E &&
                       wd->strides[0] == 12 * E && y->shape[0] == N * Ho * Wo &&
                       (!be || v[ibe].shape[0] == E) && (!bd || v[ibd].shape[0] == E) &&
                       (!bp || v[ibp].shape[0] == F);
    const int res_ok = !residual || (stride == 1 && C == F && sh == W * sw);
    if (shapes && res_ok && !pw_overlaps(v, n, n - 1)) {
        block_job j = {isa, N, H, W, C, sn, sh, sw, E, F, stride, Ho, Wo, x->buf, NULL, be,
                       wd->buf, bd, NULL, bp, acts[0], acts[1], acts[2], residual, y->buf,
                       y->strides[0] / 4, 0};
        ok = -1;
        if ((we == NULL || (j.We = pack(isa, &v[iwe], t, 4, threads, openmp, &j.failed)) != NULL) &&
            (j.Wp = pack(isa, wp, t, 5, threads, openmp, &j.failed)) != NULL) {
            const long long macs = (long long)N * Ho * Wo * (E * F + 9 * E) +
                                   (we ? (long long)N * H * W * C * E : 0);
            ok = pw_run_released(pw_block_part, &j, macs, threads, &j.failed, openmp);
        }
        for (int slot = 4; slot < 6; slot++)
            if ((size_t)pw_taps_packed_size(isa, E, F > C ? F : C) * sizeof(float) >
                KEEP_BLOCK_PACKED_BYTES)
                pw_scratch_drop(slot);
    }
#endif
    return pw_answer(v, n, ok);
}
