/* The channels-last driver: Y[m, :] = act(X[m, :] @ W + bias + R[m, :]), the pixels' rows
 * of X read in place (or gathered, slab by slab, when a stride leaves them unevenly spaced),
 * W packed into panels that stay in L2, on every call, from W's own memory: row-major
 * (K, N), or column-major, the (N, K) = (F, C) storage torch keeps a conv's weight in. So
 * no copy of W outlives the call, and an edit to W is seen by the next call, however it was
 * made. */
#include "pointwise.h"

#ifdef PW_X86
#include <string.h>

/* Bp[k, 0:NR] = B[k, 0:nr] for k < kc, zero-padded to NR columns. */
static void pack_panel(const float *B, idx ldb, idx kc, int nr, int NR, float *Bp) {
    for (idx k = 0; k < kc; k++) {
        memcpy(Bp + k * NR, B + k * ldb, (size_t)nr * sizeof(float));
        if (nr < NR) memset(Bp + k * NR + nr, 0, (size_t)(NR - nr) * sizeof(float));
    }
}

/* The same from column-major B (column j at B + j * ldb). */
static void pack_panel_t(const float *B, idx ldb, idx kc, int nr, int NR, float *Bp) {
    pw_transpose(B, ldb, nr, kc, Bp, NR);
    if (nr < NR)
        for (idx k = 0; k < kc; k++) memset(Bp + k * NR + nr, 0, (size_t)(NR - nr) * sizeof(float));
}

/* With AVX2, X's rows are copied (after the first panel has read them, from L2) into a
 * slab whose rows lie PAD_FLOATS past a multiple of 4 KiB apart, when X's own rows are a
 * multiple of 4 KiB apart (ldx % ALIAS_FLOATS == 0: C = 1024, 2048): a tile's six rows
 * then fall in one set of Zen 3's 8-way L1 with the next tile's six that the kernel fetches,
 * and evict each other. The kernel alone (6x16 tile, kc = 256, a 192-row slab from L2,
 * Zen 3, 1 thread): 95.6 GFLOP/s at rows 1088 B apart, 80-84 at 4 and 8 KiB, 90-93 at 2 KiB.
 * In the driver, N=8, 1 thread, best of 40 calls, both builds in one process
 * (/work/notes/runs/gemm2/abso.py): 14x14 1024->256 67 -> 76 GFLOP/s, 7x7 2048->512
 * 63 -> 82, 14x14 2048->256 67 -> 83; at C = 256 and 512 the copy cost 2-5% and gained
 * nothing, so rows 1 or 2 KiB apart stay in place. AVX-512 reads X in place as before. */
enum { ALIAS_FLOATS = 1024, PAD_FLOATS = 16 };

static void copy_rows(const float *X, idx ldx, idx rows, idx kc, float *G, idx ldg) {
    for (idx m = 0; m < rows; m++) memcpy(G + m * ldg, X + m * ldx, (size_t)kc * sizeof(float));
}

static void gather_rows(const float *X, const grid_t *g, idx m0, idx m1, idx pc, idx kc,
                        float *G) {
    idx j = m0 % g->wo, i = (m0 / g->wo) % g->ho, n = m0 / (g->wo * g->ho);
    for (idx m = m0; m < m1; m++) {
        memcpy(G + (m - m0) * kc, X + n * g->sn + i * g->sh + j * g->sw + pc,
               (size_t)kc * sizeof(float));
        if (++j == g->wo) {
            j = 0;
            if (++i == g->ho) { i = 0; n++; }
        }
    }
}

/* Channels-last: Y[m, :] = act(X[m, :] @ W + bias + R[m, :]) for m in [m0, m1); R may be
 * NULL. */
static int rows_driver(const isa_t *isa, idx m0, idx m1, idx K, idx N, const float *X, idx ldx,
                       const grid_t *grid, const float *W, idx ldw, int wt, float *Y, idx ldy,
                       const float *bias, const float *R, idx ldr, int act) {
    const shape_t *s = pw_rows_shape(isa, N);
    const int vw = isa->vw, NR = s->nv * vw;
    const idx KCI = isa->kc, kcb = min_i(K, KCI);
    /* The packed W block (kcb x NC) is kept in L2, 512 KiB of it. */
    idx NC = (idx)(512 * 1024 / sizeof(float)) / kcb / NR * NR;
    if (NC < NR) NC = NR;
    if (NC > N) NC = N;
    /* a slab of X is kept in L2: 4 * 8 tiles of KC floats a row (192 KiB at 6 rows), the
     * same bytes in fewer rows at a longer K block */
    const idx slab = 4 * s->mr * 8 * KC / KCI;
    /* X's rows copied to G after the first panel (see ALIAS_FLOATS), row stride ldg */
    const int unalias = vw == 8 && grid == NULL && ldx % ALIAS_FLOATS == 0 && NC > NR;
    const idx ldg = unalias ? kcb + PAD_FLOATS : kcb;
    /* R at Y: the output written over the residual, which is then where the sums start */
    const int into = R != NULL && R == Y && ldr == ldy;
    if (into) R = NULL;
    float *Bp = pw_scratch(0, (size_t)(kcb * (NC + NR)));
    float *G = grid || unalias ? pw_scratch(1, (size_t)(slab * ldg)) : NULL;
    if (Bp == NULL || ((grid || unalias) && G == NULL)) return -1;
    for (idx jc = 0; jc < N; jc += NC) {
        const idx nc = min_i(N - jc, NC);
        for (idx pc = 0; pc < K; pc += KCI) {
            const idx kc = min_i(K - pc, KCI);
            const int first = pc == 0 && !into, last = pc + kc >= K;
            for (idx j = 0; j < nc; j += NR) {
                const int nr = (int)min_i(nc - j, NR);
                const int width = (nr + vw - 1) / vw * vw;
                if (wt)
                    pack_panel_t(W + (jc + j) * ldw + pc, ldw, kc, nr, width, Bp + j * kc);
                else
                    pack_panel(W + pc * ldw + jc + j, ldw, kc, nr, width, Bp + j * kc);
            }
            /* rows outermost, in slabs, so each slab of X is read from cache for every panel */
            for (idx i = m0; i < m1; i += slab) {
                const idx i1 = min_i(m1, i + slab);
                /* the slab's rows of X: in place, or gathered into G (row stride kc) */
                const float *A = X + pc + i * ldx;
                idx lda = ldx;
                if (grid) {
                    gather_rows(X, grid, i, i1, pc, kc, G);
                    A = G;
                    lda = kc;
                }
                for (idx j = 0; j < nc; j += NR) {
                    const int nr = (int)min_i(nc - j, NR), nv = (nr + vw - 1) / vw;
                    if (unalias && j == NR) {  /* the slab is in L2 now: copy it from there */
                        copy_rows(A, lda, i1 - i, kc, G, ldg);
                        A = G;
                        lda = ldg;
                    }
                    pw_tile_rows(s->by_nv[nv], s->tail[nv], s->mr, 0, i1 - i, kc, A, lda,
                                 Bp + j * kc, nv * vw, Y + i * ldy + jc + j, ldy, nr, first, last,
                                 bias ? bias + jc + j : NULL, NULL,
                                 R ? R + i * ldr + jc + j : NULL, ldr, act, 0);
                }
            }
        }
    }
    return 0;
}

/* With AVX2, a job of fewer rows than columns is shared by columns, in whole panels: each
 * part packs only its share of W, and reads all of X (M x K, the smaller), where a share of
 * the rows would have it pack all of W (7x7 at N=8: 392 rows, W 4 MiB at 2048->512).
 * Zen 3, 2 threads, best of 30 calls, one process (/work/notes/runs/gemm2/ab2.py): 7x7
 * 2048->512 172 -> 179 GFLOP/s, 7x7 512->2048 167 -> 170, N=1 14x14 256->1024 157 -> 169. */
static int by_columns(const rows_job *j, int parts) {
    const idx NR = pw_rows_shape(j->isa, j->N)->nv * j->isa->vw;
    return j->isa->vw == 8 && parts > 1 && j->M < j->N && j->N >= 2 * NR * parts;
}

void pw_rows_part(void *arg, int part, int parts) {
    rows_job *j = arg;
    if (by_columns(j, parts)) {
        const idx NR = pw_rows_shape(j->isa, j->N)->nv * j->isa->vw, panels = (j->N + NR - 1) / NR;
        const idx n0 = min_i(j->N, panels * part / parts * NR);
        const idx n1 = min_i(j->N, panels * (part + 1) / parts * NR);
        if (n0 < n1 && rows_driver(j->isa, 0, j->M, j->K, n1 - n0, j->X, j->ldx, j->grid,
                                   j->W + (j->wt ? n0 * j->ldw : n0), j->ldw, j->wt, j->Y + n0,
                                   j->ldy, j->bias ? j->bias + n0 : NULL,
                                   j->R ? j->R + n0 : NULL, j->ldr, j->act) != 0)
            atomic_store(&j->failed, 1);
        return;
    }
    const idx unit = pw_rows_shape(j->isa, j->N)->mr;  /* whole tiles: only the last part has a tail */
    const idx per = (j->M + parts * unit - 1) / (parts * unit) * unit;
    const idx m0 = min_i(j->M, part * per), m1 = min_i(j->M, m0 + per);
    if (m0 < m1 && rows_driver(j->isa, m0, m1, j->K, j->N, j->X, j->ldx, j->grid, j->W, j->ldw, j->wt, j->Y,
                               j->ldy, j->bias, j->R, j->ldr, j->act) != 0)
        atomic_store(&j->failed, 1);
}
#endif
