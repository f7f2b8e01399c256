/* The fused blocks: MobileNetV2's inverted residual and MobileNet's depthwise-separable block
 * as one pass over bands of output rows, the wide intermediate tensors never written out.
 *
 *   e = act_e(X @ We + be)                  expand 1x1, C -> E (absent: e = X, E = C)
 *   d = act_d(depthwise3x3_s(e) + bd)       padding 1, stride s
 *   Y = act_p(d @ Wp + bp [+ X])            project 1x1, E -> F; X added when asked
 *
 * A part takes whole bands of B output rows of one image at a time. For a band it expands
 * the input rows the band's depthwise reads into a per-thread buffer (the rows shared with
 * the previous band are kept, moved to the front, not computed again), filters them into a
 * second buffer, and projects that into the output with the bias, activation and residual
 * applied in registers. Both buffers are sized to stay in L2 (BAND_BUDGET); in MobileNetV2's
 * first expanding block, at N=8, the expanded tensor that separate layers write and read
 * twice is 37 MiB each way. The 1x1 products run the rows micro-kernels on weights packed
 * once per call (pw_taps_pack_part's panels); the depthwise runs depthwise.c's row function.
 */
#include "pointwise.h"

#ifdef PW_X86
#include <string.h>

/* The two buffers of a band, together, in bytes: half of Zen 4's 1 MiB L2, leaving room
 * for the packed weights the products stream (up to 1.2 MB at 960 -> 320, read in K blocks
 * of KC rows). */
#ifndef BAND_BUDGET
#define BAND_BUDGET (512 * 1024)
#endif
/* A band has at least this many output pixels when the budget allows: the projection's
 * GEMM then has rows for whole tiles of 6-24 rows, not ragged tails. */
enum { BAND_MIN_PIXELS = 96 };

/* Y[M x N] = act(A[M x K] @ B + bias + R), B packed (panels of the rows tile's width, see
 * taps.c's pack_rows), A's rows lda apart, R's ldr apart. */
static void gemm(const isa_t *isa, idx M, idx K, idx N, const float *A, idx lda, const float *B,
                 float *Y, idx ldy, const float *bias, const float *R, idx ldr, int act) {
    const shape_t *s = pw_rows_shape(isa, N);
    const int vw = isa->vw, NR = s->nv * vw;
    for (idx pc = 0; pc < K; pc += KC) {
        const idx kc = min_i(K - pc, KC);
        const int first = pc == 0, last = pc + kc >= K;
        for (idx jc = 0; jc < N; jc += NR) {
            const int nr = (int)min_i(N - jc, NR), nv = (nr + vw - 1) / vw, width = nv * vw;
            pw_tile_rows(s->by_nv[nv], s->tail[nv], s->mr, 0, M, kc, A + pc, lda,
                         B + jc * K + pc * width, width, Y + jc, ldy, nr, first, last,
                         bias ? bias + jc : NULL, NULL, R ? R + jc : NULL, ldr, act, 0);
        }
    }
}

/* Output rows per band: at least BAND_MIN_PIXELS pixels, at most what BAND_BUDGET holds,
 * and few enough that every part gets a band. The same in every part. */
static idx band_rows(const block_job *j, int parts) {
    idx B = (BAND_MIN_PIXELS + j->Wo - 1) / j->Wo;
    const idx per_image = (parts + j->N - 1) / j->N;  /* bands each image must give */
    const idx most = (j->Ho + per_image - 1) / per_image;
    B = min_i(B, most < 1 ? 1 : most);
    while (B > 1 && (idx)sizeof(float) * j->E *
                        (((B - 1) * j->s + 3) * j->W * (j->We != NULL) + B * j->Wo) > BAND_BUDGET)
        B--;
    return B;
}

/* The expanded input rows [a, b) of image n into buf (rows W·E floats apart). */
static void expand_rows(const block_job *j, idx n, idx a, idx b, float *buf) {
    const float *x = j->X + n * j->sn;
    if (j->sh == j->W * j->sw) {  /* the rows are one run of pixels: one product */
        gemm(j->isa, (b - a) * j->W, j->C, j->E, x + a * j->sh, j->sw, j->We, buf, j->E, j->be,
             NULL, 0, j->act_e);
        return;
    }
    for (idx r = a; r < b; r++)
        gemm(j->isa, j->W, j->C, j->E, x + r * j->sh, j->sw, j->We, buf + (r - a) * j->W * j->E,
             j->E, j->be, NULL, 0, j->act_e);
}

/* Bands [u0, u1) of the N images' nb bands each. */
static int block_driver(const block_job *j, idx B, idx u0, idx u1) {
    const idx nb = (j->Ho + B - 1) / B, WE = j->W * j->E;
    const int expand = j->We != NULL;
    float *zero = pw_scratch(0, (size_t)j->E);
    float *ebuf = expand ? pw_scratch(1, (size_t)(((B - 1) * j->s + 3) * WE)) : NULL;
    float *dbuf = pw_scratch(2, (size_t)(B * j->Wo * j->E));
    if (zero == NULL || dbuf == NULL || (expand && ebuf == NULL)) return -1;
    memset(zero, 0, (size_t)j->E * sizeof(float));
    const dw_row_t dw_row = pw_dw_row(j->isa);
    idx en = -1, elo = 0, ehi = 0;  /* ebuf holds the expanded rows [elo, ehi) of image en */
    for (idx u = u0; u < u1; u++) {
        const idx n = u / nb, oy0 = u % nb * B, oy1 = min_i(j->Ho, oy0 + B);
        const idx lo = oy0 * j->s - 1 < 0 ? 0 : oy0 * j->s - 1;
        const idx hi = min_i(j->H, (oy1 - 1) * j->s + 2);
        if (expand) {
            idx from = lo;
            if (en == n && lo >= elo && lo < ehi) {  /* keep the rows this band shares */
                memmove(ebuf, ebuf + (lo - elo) * WE, (size_t)((ehi - lo) * WE) * sizeof(float));
                from = ehi;
            }
            if (hi > from) expand_rows(j, n, from, hi, ebuf + (from - lo) * WE);
            en = n, elo = lo, ehi = hi;
        }
        for (idx oy = oy0; oy < oy1; oy++) {
            const float *rows[3];
            for (int i = 0; i < 3; i++) {
                const idx iy = oy * j->s - 1 + i;
                rows[i] = iy < 0 || iy >= j->H ? NULL
                          : expand ? ebuf + (iy - lo) * WE : j->X + n * j->sn + iy * j->sh;
            }
            dw_row(rows, j->W, expand ? j->E : j->sw, j->E, j->Wo, j->s, j->Wd, j->bd,
                   dbuf + (oy - oy0) * j->Wo * j->E, j->E, j->act_d, zero);
        }
        const float *R = j->residual ? j->X + n * j->sn + oy0 * j->sh : NULL;
        gemm(j->isa, (oy1 - oy0) * j->Wo, j->E, j->F, dbuf, j->E, j->Wp,
             j->Y + (n * j->Ho + oy0) * j->Wo * j->ldy, j->ldy, j->bp, R, j->sw, j->act_p);
    }
    return 0;
}

/* Parts split the bands evenly (a part's first band expands its rows afresh). */
void pw_block_part(void *arg, int part, int parts) {
    block_job *j = arg;
    const idx B = band_rows(j, parts), units = j->N * ((j->Ho + B - 1) / B);
    const idx u0 = units * part / parts, u1 = units * (part + 1) / parts;
    if (u0 < u1 && block_driver(j, B, u0, u1) != 0) atomic_store(&j->failed, 1);
}
#endif
