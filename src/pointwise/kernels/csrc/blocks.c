/* The fused blocks: MobileNetV2's inverted residual and MobileNet's depthwise-separable block
 * as one pass over bands of output rows, the wide intermediate tensors never written out.
 *
 *   e = act_e(X @ We + be)                  expand 1x1, C -> E (absent: e = X, E = C)
 *   d = act_d(depthwise3x3_s(e) + bd)       padding 1, stride s
 *   Y = act_p(d @ Wp + bp [+ X])            project 1x1, E -> F; X added when asked
 *
 * A part takes bands of at most B output rows at a time, counted over all the images, so a
 * band of 7x7 images holds several (see plan()). For a band it expands
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

/* Y[M x N] = act(A[M x K] @ B + bias + R), B packed in panels of the tile shape s's width
 * (taps.c's pack_rows, for all of the weight's columns: N may be a slice of whole panels),
 * A's rows lda apart, R's ldr apart. */
static void gemm(const isa_t *isa, const shape_t *s, idx M, idx K, idx N, const float *A,
                 idx lda, const float *B, float *Y, idx ldy, const float *bias, const float *R,
                 idx ldr, int act) {
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

/* How the parts share the work: fp parts per group of output rows, each projecting its own
 * slice of the filters (whole panels); the mp = parts / fp groups take equal runs of the
 * N·Ho output rows (counted over all images), in bands of at most `rows` rows. */
typedef struct {
    int fp, mp;
    idx rows;
} split_t;

/* A band may span images when the next image's output rows, and the input rows the
 * residual adds, follow the last ones in memory. Then at 7x7 a band is not one image's 49
 * pixels, and the projection's weight (up to 4 MB in MobileNet v1) is streamed once for
 * several images, not once for each. */
static int spans(const block_job *j) { return !j->residual || j->sn == j->H * j->sh; }

/* The bytes of a band's two buffers at B output rows. */
static idx band_bytes(const block_job *j, idx B) {
    const idx seg = spans(j) ? min_i(B, j->Ho) : B;  /* output rows of one image */
    const idx in = min_i(j->H, (seg - 1) * j->s + 3);
    return (idx)sizeof(float) * j->E * (in * j->W * (j->We != NULL) + B * j->Wo);
}

/* Bands of at least BAND_MIN_PIXELS pixels when BAND_BUDGET allows, all the parts busy.
 * Without an expansion to repeat, parts that would get less than two bands' pixels each
 * split the filters instead (each then filters the same rows, 9 multiply-adds a channel,
 * against the E·F of its slice): 7x7 1024 -> 1024 at N=1 is 49 pixels, which split by rows
 * gave each part 28 or 21 pixels to stream all of the 4 MB weight for. */
static split_t plan(const block_job *j, int parts) {
    split_t p = {1, parts, 1};
    const idx R = j->N * j->Ho;
    const idx NR = pw_rows_shape(j->isa, j->F)->nv * j->isa->vw, panels = (j->F + NR - 1) / NR;
    if (j->We == NULL && parts > 1 && panels >= parts &&
        R * j->Wo < (idx)parts * 2 * BAND_MIN_PIXELS)
        p.fp = parts, p.mp = 1;
    idx B = (BAND_MIN_PIXELS + j->Wo - 1) / j->Wo;
    const idx most = (R + p.mp - 1) / p.mp;  /* each group gets rows */
    B = min_i(B, most < 1 ? 1 : most);
    if (!spans(j)) B = min_i(B, j->Ho);
    while (B > 1 && band_bytes(j, B) > BAND_BUDGET) B--;
    p.rows = B;
    return p;
}

/* The expanded input rows [a, b) of image n into buf (rows W·E floats apart). */
static void expand_rows(const block_job *j, const shape_t *se, idx n, idx a, idx b,
                        float *buf) {
    const float *x = j->X + n * j->sn;
    if (j->sh == j->W * j->sw) {  /* the rows are one run of pixels: one product */
        gemm(j->isa, se, (b - a) * j->W, j->C, j->E, x + a * j->sh, j->sw, j->We, buf, j->E,
             j->be, NULL, 0, j->act_e);
        return;
    }
    for (idx r = a; r < b; r++)
        gemm(j->isa, se, j->W, j->C, j->E, x + r * j->sh, j->sw, j->We,
             buf + (r - a) * j->W * j->E, j->E, j->be, NULL, 0, j->act_e);
}

/* Output rows [g0, g1) (counted over the images), in bands of at most B rows that end at an
 * image's last row unless bands span images; filters [f0, f1) of the projection. */
static int block_driver(const block_job *j, idx B, idx g0, idx g1, idx f0, idx f1) {
    const idx WE = j->W * j->E, seg = spans(j) ? min_i(B, j->Ho) : B;
    const int expand = j->We != NULL;
    const shape_t *se = expand ? pw_rows_shape(j->isa, j->E) : NULL;
    const shape_t *sp = pw_rows_shape(j->isa, j->F);
    float *zero = pw_scratch(0, (size_t)j->E);
    float *ebuf = expand ? pw_scratch(1, (size_t)(min_i(j->H, (seg - 1) * j->s + 3) * WE)) : NULL;
    float *dbuf = pw_scratch(2, (size_t)(B * j->Wo * j->E));
    if (zero == NULL || dbuf == NULL || (expand && ebuf == NULL)) return -1;
    memset(zero, 0, (size_t)j->E * sizeof(float));
    const dw_row_t dw_row = pw_dw_row(j->isa);
    const idx bands = (g1 - g0 + B - 1) / B, rows = (g1 - g0 + bands - 1) / bands;  /* even */
    idx en = -1, elo = 0, ehi = 0;  /* ebuf holds the expanded rows [elo, ehi) of image en */
    for (idx r0 = g0, r1; r0 < g1; r0 = r1) {
        r1 = min_i(g1, r0 + rows);
        if (!spans(j)) r1 = min_i(r1, (r0 / j->Ho + 1) * j->Ho);
        for (idx r = r0, next; r < r1; r = next) {  /* the band's rows of each image */
            const idx n = r / j->Ho, oy0 = r % j->Ho, oy1 = min_i(j->Ho, oy0 + (r1 - r));
            next = r + (oy1 - oy0);
            const idx lo = oy0 * j->s - 1 < 0 ? 0 : oy0 * j->s - 1;
            const idx hi = min_i(j->H, (oy1 - 1) * j->s + 2);
            if (expand) {
                idx from = lo;
                if (en == n && lo >= elo && lo < ehi) {  /* keep the rows this band shares */
                    memmove(ebuf, ebuf + (lo - elo) * WE, (size_t)((ehi - lo) * WE) * sizeof(float));
                    from = ehi;
                }
                if (hi > from) expand_rows(j, se, n, from, hi, ebuf + (from - lo) * WE);
                en = n, elo = lo, ehi = hi;
            }
            for (idx oy = oy0; oy < oy1; oy++) {
                const float *in[3];
                for (int i = 0; i < 3; i++) {
                    const idx iy = oy * j->s - 1 + i;
                    in[i] = iy < 0 || iy >= j->H ? NULL
                            : expand ? ebuf + (iy - lo) * WE : j->X + n * j->sn + iy * j->sh;
                }
                dw_row(in, j->W, expand ? j->E : j->sw, j->E, j->Wo, j->s, j->Wd, j->bd,
                       dbuf + (r - r0 + oy - oy0) * j->Wo * j->E, j->E, j->act_d, zero);
            }
        }
        /* the residual's rows: image r0 / Ho's from row r0 % Ho on, the next images' after */
        const float *R = j->residual ? j->X + r0 / j->Ho * j->sn + r0 % j->Ho * j->sh + f0 : NULL;
        gemm(j->isa, sp, (r1 - r0) * j->Wo, j->E, f1 - f0, dbuf, j->E, j->Wp + f0 * j->E,
             j->Y + r0 * j->Wo * j->ldy + f0, j->ldy, j->bp ? j->bp + f0 : NULL, R, j->sw,
             j->act_p);
    }
    return 0;
}

/* Group pm takes the rows [R·pm/mp, R·(pm+1)/mp); its fp parts, a slice of whole panels of
 * the filters each, split as pw_taps_pack_part splits them, so each reads what it packed. */
void pw_block_part(void *arg, int part, int parts) {
    block_job *j = arg;
    const split_t p = plan(j, parts);
    const int pm = part / p.fp, pf = part % p.fp;
    const idx R = j->N * j->Ho, g0 = R * pm / p.mp, g1 = R * (pm + 1) / p.mp;
    const idx NR = pw_rows_shape(j->isa, j->F)->nv * j->isa->vw, panels = (j->F + NR - 1) / NR;
    const idx f0 = min_i(j->F, panels * pf / p.fp * NR);
    const idx f1 = min_i(j->F, panels * (pf + 1) / p.fp * NR);
    if (pm < p.mp && g0 < g1 && f0 < f1 && block_driver(j, p.rows, g0, g1, f0, f1) != 0)
        atomic_store(&j->failed, 1);
}
#endif
