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

/* w (K, F) rows ldw apart, or with t torch's (F, K) storage (rows ldw apart), to pack into
 * out. */
static taps_pack_job pack_job(const isa_t *isa, const float *w, idx K, idx F, idx ldw, int t,
                              float *out) {
    taps_pack_job p = {isa, w, K, F, ldw, out};
    if (t) {  /* element (c, f) at f * ldw + c: one kernel tap of C = K rows, read transposed */
        p.KW = 1, p.C = K, p.sc = 1, p.sf = ldw;
        p.ldw = 0;
    }
    return p;
}

/* Both 1x1 weights of a block, packed in one parallel region. */
typedef struct {
    const block_job *j;
    taps_pack_job e, p;  /* e.W NULL: no expansion */
} block_pack_job;

/* We's panels split as pw_taps_pack_part splits them; Wp's, when the block's parts split
 * the expanded channels, by the rows each part's slice projects (so each reads its share of
 * the packed Wp from its own cache, not half of it from the other core's), else as We's.
 * Either way the parts together pack every row of every panel, whatever the block's own
 * run then splits. On as many threads as the block's own macs get: by the weights' size
 * alone MobileNetV2's 7x7 blocks (160 x 960) and v1's 512 x 512 were packed on one thread
 * while the other waited. Against a region for each weight, F panels split: MobileNetV2's
 * blocks that split their channels at N=1 (features.8-17) took 2-6% less time in the
 * converted model, in two runs (forwards alternating in one process); the whole model 1.6
 * and 2.1%. */
static void pack_part(void *arg, int part, int parts) {
    block_pack_job *b = arg;
    idx e0, e1;
    if (b->e.W != NULL) pw_taps_pack_part(&b->e, part, parts);
    if (pw_block_eslice(b->j, part, parts, &e0, &e1))
        pw_taps_pack_rows(&b->p, e0, e1);
    else
        pw_taps_pack_part(&b->p, part, parts);
}

/* Pack j's 1x1 weights (we, wp: rows lde, ldp apart; with t, torch's (E, C) and (F, E)), or
 * with packed take them as taps_pack() laid them out, and run it: 1, or -1 when out of
 * memory. */
static int run(block_job *j, const float *we, idx lde, const float *wp, idx ldp, int t,
               int packed, int threads, int openmp) {
    int ok = -1;
    const long long macs = (long long)j->N * j->Ho * j->Wo * (j->E * j->F + 9 * j->E) +
                           (we ? (long long)j->N * j->H * j->W * j->C * j->E : 0);
    /* packed: the weights as taps_pack() laid them out, read where they are */
    float *pe = packed ? (float *)we
                : we ? pw_scratch(4, (size_t)pw_taps_packed_size(j->isa, j->C, j->E)) : NULL;
    float *pp = packed ? (float *)wp
                       : pw_scratch(5, (size_t)pw_taps_packed_size(j->isa, j->E, j->F));
    j->We = pe, j->Wp = pp;  /* where they will be: the split (plan()) depends on both */
    /* room for the partial products of parts that split the expanded channels, where the
     * block is small enough for blocks.c to have them do so */
    if ((pe != NULL || we == NULL) && pp != NULL &&
        (!pw_block_splits_channels(j, threads) ||
         (j->partial = pw_scratch(7, (size_t)((threads - 1) * j->N * j->Ho * j->Wo * j->F))) != NULL)) {
        block_pack_job b = {j, pack_job(j->isa, we, j->C, j->E, lde, t, pe),
                            pack_job(j->isa, wp, j->E, j->F, ldp, t, pp)};
        b.e.failed = b.p.failed = &j->failed;
        ok = packed ? 1 : pw_run_released(pack_part, &b, macs, threads, &j->failed, openmp);
        if (ok > 0) ok = pw_run_released(pw_block_part, j, macs, threads, &j->failed, openmp);
        if (ok > 0 && j->esplit > 1) pw_block_reduce(j);
    }
    for (int slot = 4; slot < 6; slot++)
        if ((size_t)pw_taps_packed_size(j->isa, j->E, j->F > j->C ? j->F : j->C) *
                sizeof(float) > KEEP_BLOCK_PACKED_BYTES)
            pw_scratch_drop(slot);
    return ok;
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
        ok = run(&j, we, we ? v[iwe].strides[0] / 4 : 0, wp->buf, wp->strides[0] / 4, t, 0,
                 threads, openmp);
    }
#endif
    return pw_answer(v, n, ok);
}

/* block_at(threads, openmp, (act_e, act_d, act_p), stride, residual, x, (N, H, W, C, sn, sh,
 * sw), we, be, wd, bd, wp, bp, E, F, y, packed=0) -> bool: block() on operands given by
 * address, for pointwise.nn's fused modules, which check shapes and strides once per layer
 * (as rows_at()'s callers do): x's pixels sw floats apart (channels unit stride), we (E, C)
 * and wp (F, E) torch's contiguous 1x1 weights (we 0: no expansion, E = C), wd torch's
 * contiguous (E, 1, 3, 3) depthwise weight, y (N·Ho·Wo, F) contiguous, biases 0 for none.
 * packed: we and wp as taps_pack() lays out (C, E) and (E, F), wd as (3, 3, E), all read as
 * they are (pointwise.nn.freeze). At batch 1 a small block's kernel call takes ~8 us, and the
 * eight NumPy views block() needs took ~40. */
PyObject *pw_py_block_at(PyObject *self, PyObject *args) {
    (void)self;
    int threads, openmp, acts[3], stride, residual, packed = 0, ok = 0;
    unsigned long long xa, wea, bea, wda, bda, wpa, bpa, ya;
    Py_ssize_t N, H, W, C, sn, sh, sw, E, F;
    if (!PyArg_ParseTuple(args, "ii(iii)ipK(nnnnnnn)KKKKKKnnK|p", &threads, &openmp, &acts[0],
                          &acts[1], &acts[2], &stride, &residual, &xa, &N, &H, &W, &C, &sn, &sh,
                          &sw, &wea, &bea, &wda, &bda, &wpa, &bpa, &E, &F, &ya, &packed))
        return NULL;
    for (int i = 0; i < 3; i++)
        if (!pw_check_options(acts[i], openmp)) return NULL;
#ifdef PW_X86
    const isa_t *isa = pw_current();
    const float *X, *We, *Be, *Wd, *Bd, *Wp, *Bp, *Y;
    const idx Ho = (H - 1) / (stride > 0 ? stride : 1) + 1, Wo = (W - 1) / (stride > 0 ? stride : 1) + 1;
    if (isa != NULL && (stride == 1 || stride == 2) && pw_address(xa, 0, &X) &&
        pw_address(wea, 1, &We) && pw_address(bea, 1, &Be) && pw_address(wda, 0, &Wd) &&
        pw_address(bda, 1, &Bd) && pw_address(wpa, 0, &Wp) && pw_address(bpa, 1, &Bp) &&
        pw_address(ya, 0, &Y) && N > 0 && H > 0 && W > 0 && C > 0 && E > 0 && F > 0 &&
        sw >= C && sh >= W * sw && sn >= H * sh && (We != NULL || E == C) &&
        (!residual || (stride == 1 && C == F && sh == W * sw))) {
        float *wd = packed ? (float *)Wd : pw_scratch(3, (size_t)(9 * E));
        ok = -1;
        if (wd != NULL) {
            for (idx e = 0; !packed && e < E; e++)  /* (E, 1, 3, 3) -> (3, 3, E) */
                for (int t = 0; t < 9; t++) wd[t * E + e] = Wd[e * 9 + t];
            block_job j = {isa, N, H, W, C, sn, sh, sw, E, F, stride, Ho, Wo, X, NULL, Be, wd,
                           Bd, NULL, Bp, acts[0], acts[1], acts[2], residual, (float *)Y, F, 0};
            ok = run(&j, We, C, Wp, E, 1, packed, threads, openmp);
        }
    }
#endif
    if (ok < 0) return PyErr_NoMemory();
    return PyBool_FromLong(ok);
}
