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
#include <immintrin.h>
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

/* AVX2 only: the block's own tiles of MR x 8·NV outputs (MR = 1..6, NV = 1, 2), for whole
 * vectors of filters, with an epilogue branched once per tile rather than per vector. The
 * rows kernels (microkernels.c) test first, last, the bias, the residual and the activation
 * at each of a tile's 12 vectors, and pad a tail of one or two rows into a copy; at the
 * expansions' short K (16-160) that was most of a tile's time: in a profile of MobileNetV2's
 * 56x56 24->144->32 s2 block (N=1, 1 thread) 54% of the 6x16 kernel's samples fell outside
 * its K loop, 27% at 14x14 64->384->64. Against the rows kernels, MobileNetV2's 17 blocks
 * (native.block, weights packed per call; fastest/median of 7 rounds, interleaved in one
 * process, /work/notes/runs/mb3/ab.py): N=1 on 1 thread (its CPU time) summed 12.72/14.89
 * -> 10.48/12.05 ms, 112x112 16->96->24 s2 1.53x, 56x56 24->144->24 1.61x, the 14x14 and
 * 7x7 blocks 0.96-1.28x; N=8 on 2 threads 45.0/51.6 -> 36.3/42.1 ms, 1.02-1.60x a block.
 * K blocks of 128, 512 or 1024 rather than KC moved the 14x14 and 7x7 blocks by noise. */
#define T256 __attribute__((target("avx2,fma")))
#define BK_BODY(MR, NV)                                                                      \
    __m256 acc[MR][NV];                                                                      \
    const float *ab[(MR + 2) / 3];                                                           \
    _Pragma("GCC unroll 2") for (int q = 0; q < (MR + 2) / 3; q++) ab[q] = A + 3 * q * lda;   \
    _Pragma("GCC unroll 6") for (int r = 0; r < MR; r++)                                     \
        _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++) acc[r][v] = _mm256_setzero_ps(); \
    for (idx k = 0; k < kc; k++) {                                                           \
        __m256 b[NV];                                                                        \
        _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++) b[v] = _mm256_loadu_ps(B + 8 * v); \
        _Pragma("GCC unroll 6") for (int r = 0; r < MR; r++) {                               \
            const __m256 a = _mm256_broadcast_ss(ab[r / 3] + (r % 3) * lda + k);             \
            _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++)                             \
                acc[r][v] = _mm256_fmadd_ps(a, b[v], acc[r][v]);                             \
        }                                                                                    \
        B += ldb;                                                                            \
    }                                                                                        \
    if (!first)                                                                              \
        _Pragma("GCC unroll 6") for (int r = 0; r < MR; r++)                                 \
            _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++)                             \
                acc[r][v] = _mm256_add_ps(acc[r][v], _mm256_loadu_ps(C + r * ldc + 8 * v));  \
    if (last) {                                                                              \
        if (bias) {                                                                          \
            __m256 bv[NV];                                                                   \
            _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++)                             \
                bv[v] = _mm256_loadu_ps(bias + 8 * v);                                       \
            _Pragma("GCC unroll 6") for (int r = 0; r < MR; r++)                             \
                _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++)                         \
                    acc[r][v] = _mm256_add_ps(acc[r][v], bv[v]);                             \
        }                                                                                    \
        if (R)                                                                               \
            _Pragma("GCC unroll 6") for (int r = 0; r < MR; r++)                             \
                _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++)                         \
                    acc[r][v] = _mm256_add_ps(acc[r][v], _mm256_loadu_ps(R + r * ldr + 8 * v)); \
        /* max/min return their second operand when one is NaN: NaN stays */               \
        if (act != ACT_NONE) {                                                               \
            const __m256 zero = _mm256_setzero_ps(), six = _mm256_set1_ps(6.0f);             \
            _Pragma("GCC unroll 6") for (int r = 0; r < MR; r++)                             \
                _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++) {                       \
                    acc[r][v] = _mm256_max_ps(zero, acc[r][v]);                              \
                    if (act == ACT_RELU6) acc[r][v] = _mm256_min_ps(six, acc[r][v]);         \
                }                                                                            \
        }                                                                                    \
    }                                                                                        \
    _Pragma("GCC unroll 6") for (int r = 0; r < MR; r++)                                     \
        _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++)                                 \
            _mm256_storeu_ps(C + r * ldc + 8 * v, acc[r][v]);

/* C[MR x 8·NV] (+)= A[MR x kc] @ B[kc x 8·NV] (B's rows ldb apart), the bias (8·NV floats),
 * residual R (rows ldr apart) and activation on the last K block, as the rows kernels. */
typedef void (*bk_t)(idx kc, const float *restrict A, idx lda, const float *restrict B, idx ldb,
                     float *restrict C, idx ldc, int first, int last, const float *bias,
                     const float *R, idx ldr, int act);
#define DEF_BK(MR, NV)                                                                       \
    T256 static void bk_##MR##_##NV(idx kc, const float *restrict A, idx lda,                \
                                    const float *restrict B, idx ldb, float *restrict C,     \
                                    idx ldc, int first, int last, const float *bias,         \
                                    const float *R, idx ldr, int act) {                      \
        BK_BODY(MR, NV)                                                                      \
    }
DEF_BK(1, 1) DEF_BK(2, 1) DEF_BK(3, 1) DEF_BK(4, 1) DEF_BK(5, 1) DEF_BK(6, 1)
DEF_BK(1, 2) DEF_BK(2, 2) DEF_BK(3, 2) DEF_BK(4, 2) DEF_BK(5, 2) DEF_BK(6, 2)
static const bk_t BK[3][7] = {
    {0},
    {0, bk_1_1, bk_2_1, bk_3_1, bk_4_1, bk_5_1, bk_6_1},
    {0, bk_1_2, bk_2_2, bk_3_2, bk_4_2, bk_5_2, bk_6_2},
};

/* Y[M x N] = act(A[M x K] @ B + bias + R), B rows [k0, k0 + K) of a weight of kfull rows
 * packed in panels of the tile shape s's width (taps.c's pack_rows; N may be a slice of
 * whole panels), A's rows lda apart, R's ldr apart. */
static void gemm(const isa_t *isa, const shape_t *s, idx M, idx K, idx N, const float *A,
                 idx lda, const float *B, idx kfull, idx k0, float *Y, idx ldy,
                 const float *bias, const float *R, idx ldr, int act) {
    const int vw = isa->vw, NR = s->nv * vw;
    /* AVX2, 16- and 8-wide panels of whole vectors: the block's own tiles */
    const int own = vw == 8 && NR == 16 && N % 8 == 0;
    for (idx pc = 0; pc < K; pc += KC) {
        const idx kc = min_i(K - pc, KC);
        const int first = pc == 0, last = pc + kc >= K;
        for (idx jc = 0; jc < N; jc += NR) {
            const int nr = (int)min_i(N - jc, NR), nv = (nr + vw - 1) / vw, width = nv * vw;
            if (own) {
                const float *b = B + jc * kfull + (k0 + pc) * width;
                for (idx i = 0; i < M; i += 6) {
                    const int mr = (int)min_i(M - i, 6);
                    BK[nv][mr](kc, A + i * lda + pc, lda, b, width, Y + i * ldy + jc, ldy, first,
                               last, bias ? bias + jc : NULL, R ? R + i * ldr + jc : NULL, ldr,
                               act);
                }
                continue;
            }
            pw_tile_rows(s->by_nv[nv], s->tail[nv], s->mr, 0, M, kc, A + pc, lda,
                         B + jc * kfull + (k0 + pc) * width, width, Y + jc, ldy, nr, first, last,
                         bias ? bias + jc : NULL, NULL, R ? R + jc : NULL, ldr, act, 0);
        }
    }
}

/* How the parts share the work: fp parts per group of output rows, each projecting its own
 * slice of the filters (whole panels); the mp = parts / fp groups take equal runs of the
 * N·Ho output rows (counted over all images), in bands of at most `rows` rows. */
typedef struct {
    int fp, mp, ep;  /* ep: parts splitting the expanded channels (then fp = mp = 1) */
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

/* Fewer than two bands' pixels for each of the parts. */
static int few_pixels(const block_job *j, int parts) {
    return parts > 1 && j->N * j->Ho * j->Wo < (idx)parts * 2 * BAND_MIN_PIXELS;
}

/* Whether parts may split j's expanded channels: then the caller makes room for their
 * partial products (block_job's partial). */
int pw_block_splits_channels(const block_job *j, int parts) {
    return j->We != NULL && few_pixels(j, parts);
}

/* Bands of at least BAND_MIN_PIXELS pixels when BAND_BUDGET allows, all the parts busy.
 * Without an expansion to repeat, parts that would get less than two bands' pixels each
 * split the filters instead (each then filters the same rows, 9 multiply-adds a channel,
 * against the E·F of its slice): 7x7 1024 -> 1024 at N=1 is 49 pixels, which split by rows
 * gave each part 28 or 21 pixels to stream all of the 4 MB weight for. With an expansion,
 * such parts split the expanded channels: each expands, filters and projects whole panels
 * of its own, and the partial products are summed afterwards (pw_block_reduce), so each
 * reads half of both weights. MobileNetV2 at N=1, 2 threads, against bands split by rows
 * (A/B in one process): 7x7 160 -> 960 -> 160 0.290 -> 0.229 ms, 7x7 160 -> 960 -> 320
 * 0.405 -> 0.325 ms, 14x14 96 -> 576 -> 160 s2 0.254 -> 0.227 ms; its 14x14 stride-1
 * blocks (196 pixels) moved by 0.95-1.05x, noise. */
static split_t plan(const block_job *j, int parts) {
    split_t p = {1, parts, 1, 1};
    const idx R = j->N * j->Ho;
    const idx NR = pw_rows_shape(j->isa, j->F)->nv * j->isa->vw, panels = (j->F + NR - 1) / NR;
    const idx NE = pw_rows_shape(j->isa, j->E)->nv * j->isa->vw, epanels = (j->E + NE - 1) / NE;
    const int small = few_pixels(j, parts);
    if (small && j->We == NULL && panels >= parts)
        p.fp = parts, p.mp = 1;
    else if (small && j->We != NULL && j->partial != NULL && epanels >= parts)
        p.ep = parts, p.mp = 1;
    idx B = (BAND_MIN_PIXELS + j->Wo - 1) / j->Wo;
    const idx most = (R + p.mp - 1) / p.mp;  /* each group gets rows */
    B = min_i(B, most < 1 ? 1 : most);
    if (!spans(j)) B = min_i(B, j->Ho);
    while (B > 1 && band_bytes(j, B) > BAND_BUDGET) B--;
    p.rows = B;
    return p;
}

/* The expanded input rows [a, b) of image n into buf (rows W·E floats apart). */
static void expand_rows(const block_job *j, const shape_t *se, idx n, idx a, idx b, idx e0,
                        idx e1, float *buf) {
    const float *x = j->X + n * j->sn, *be = j->be ? j->be + e0 : NULL;
    const idx Es = e1 - e0;
    if (j->sh == j->W * j->sw) {  /* the rows are one run of pixels: one product */
        gemm(j->isa, se, (b - a) * j->W, j->C, Es, x + a * j->sh, j->sw, j->We + e0 * j->C,
             j->C, 0, buf, Es, be, NULL, 0, j->act_e);
        return;
    }
    for (idx r = a; r < b; r++)
        gemm(j->isa, se, j->W, j->C, Es, x + r * j->sh, j->sw, j->We + e0 * j->C, j->C, 0,
             buf + (r - a) * j->W * Es, Es, be, NULL, 0, j->act_e);
}

/* What a part computes: output rows [g0, g1), filters [f0, f1) and expanded channels
 * [e0, e1). When the parts split the channels, each projects its own into a partial
 * product, without the epilogue: part 0 into Y, the others into P (rows F apart), summed
 * afterwards by pw_block_reduce. */
typedef struct {
    idx g0, g1, f0, f1, e0, e1;
    int partial;
    float *P;
} share_t;

/* Parts that split the output rows may take over each other's: part p's rows yet to take
 * are [front, end) in j->left[p], (1 << 63) | front << 32 | end, 0 until first read. A part
 * takes its bands from the front; one that has run out takes the second half of the rows
 * another has left (all of them, if no more than a band), and goes on with those. A static
 * split waits for the slower part: with the other core busy, MobileNetV2's blocks at N=8 ran
 * a median call no faster on two threads than on one. On AVX2 (Zen 3, 2 cores, busy with
 * other work), against the static split, all 17 blocks at N=8 in one process, interleaved,
 * 9 rounds: 61.2 -> 52.1 ms summed over the blocks' fastest rounds, 70.5 -> 62.2 over their
 * medians; 112x112 16->96->24 s2 15.4 -> 10.7 (median 19.6 -> 14.5), 56x56 24->144->24 7.5
 * -> 5.6, the 14x14 and 7x7 blocks within 0.88-1.14x either way, noise
 * (/work/notes/runs/mbv2/ab.py, native.block timed, the split chosen by an environment
 * variable in that build). */
#define LEFT_SET (1ull << 63)
static unsigned long long left_word(idx front, idx end) {
    return LEFT_SET | (unsigned long long)front << 32 | (unsigned long long)end;
}

/* Part q's word, set to its share [g0, g1) if no part has read it yet. */
static unsigned long long left_of(block_job *j, int q, idx R, int parts) {
    unsigned long long w = atomic_load(&j->left[q]);
    if (w == 0) {
        const unsigned long long init = left_word(R * q / parts, R * (q + 1) / parts);
        if (atomic_compare_exchange_strong(&j->left[q], &w, init)) w = init;
    }
    return w;
}

/* The next band [*r0, *r1) of part `part` (of at most `rows` rows, cut at an image's end
 * unless bands span images): 1, or 0 when no part has rows left. */
static int claim(block_job *j, int part, int parts, idx rows, idx *r0, idx *r1) {
    const idx R = j->N * j->Ho;
    for (;;) {
        unsigned long long w = left_of(j, part, R, parts);
        const idx front = (idx)((w >> 32) & 0x7fffffff), end = (idx)(w & 0xffffffff);
        if (front < end) {
            idx to = min_i(end, front + rows);
            if (!spans(j)) to = min_i(to, (front / j->Ho + 1) * j->Ho);
            if (atomic_compare_exchange_weak(&j->left[part], &w, left_word(to, end))) {
                *r0 = front, *r1 = to;
                return 1;
            }
            continue;
        }
        /* out of rows: half of what the part with the most left has */
        int victim = -1;
        idx most = 0;
        unsigned long long vw = 0;
        for (int q = 0; q < parts; q++) {
            if (q == part) continue;
            const unsigned long long x = left_of(j, q, R, parts);
            const idx n = (idx)(x & 0xffffffff) - (idx)((x >> 32) & 0x7fffffff);
            if (n > most) most = n, victim = q, vw = x;
        }
        if (victim < 0) return 0;
        const idx vf = (idx)((vw >> 32) & 0x7fffffff), ve = (idx)(vw & 0xffffffff);
        const idx cut = most > rows ? vf + most / 2 : vf;
        if (atomic_compare_exchange_strong(&j->left[victim], &vw, left_word(vf, cut)))
            atomic_store(&j->left[part], left_word(cut, ve));
    }
}

/* Output rows [g0, g1) (counted over the images), in bands of at most B rows that end at an
 * image's last row unless bands span images; filters [f0, f1) of the projection. With
 * `steal`, part `part` of `parts` takes its bands through claim() instead. */
static int block_driver(block_job *j, idx B, const share_t *sh, int steal, int part, int parts) {
    const idx g0 = sh->g0, g1 = sh->g1, f0 = sh->f0, f1 = sh->f1, e0 = sh->e0, Es = sh->e1 - e0;
    const idx WE = j->W * Es, seg = spans(j) ? min_i(B, j->Ho) : B;
    const int expand = j->We != NULL;
    const shape_t *se = expand ? pw_rows_shape(j->isa, j->E) : NULL;
    const shape_t *sp = pw_rows_shape(j->isa, j->F);
    float *zero = pw_scratch(0, (size_t)j->E);
    float *ebuf = expand ? pw_scratch(1, (size_t)(min_i(j->H, (seg - 1) * j->s + 3) * WE)) : NULL;
    float *dbuf = pw_scratch(2, (size_t)(B * j->Wo * Es));
    const float *wd = j->Wd, *bd = j->bd ? j->bd + e0 : NULL;
    if (zero == NULL || dbuf == NULL || (expand && ebuf == NULL)) return -1;
    if (Es < j->E) {  /* the slice's depthwise weights, (3, 3, Es) */
        float *w = pw_scratch(6, (size_t)(9 * Es));
        if (w == NULL) return -1;
        for (int t = 0; t < 9; t++) memcpy(w + t * Es, j->Wd + t * j->E + e0, (size_t)Es * sizeof(float));
        wd = w;
    }
    memset(zero, 0, (size_t)j->E * sizeof(float));
    const dw_row_t dw_row = pw_dw_row(j->isa);
    const idx bands = (g1 - g0 + B - 1) / B, rows = (g1 - g0 + bands - 1) / bands;  /* even */
    idx en = -1, elo = 0, ehi = 0;  /* ebuf holds the expanded rows [elo, ehi) of image en */
    for (idx r0 = g0, r1 = g0;; r0 = r1) {
        if (steal) {
            if (!claim(j, part, parts, rows, &r0, &r1)) break;
        } else {
            if (r0 >= g1) break;
            r1 = min_i(g1, r0 + rows);
            if (!spans(j)) r1 = min_i(r1, (r0 / j->Ho + 1) * j->Ho);
        }
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
                if (hi > from) expand_rows(j, se, n, from, hi, e0, sh->e1, ebuf + (from - lo) * WE);
                en = n, elo = lo, ehi = hi;
            }
            for (idx oy = oy0; oy < oy1; oy++) {
                const float *in[3];
                for (int i = 0; i < 3; i++) {
                    const idx iy = oy * j->s - 1 + i;
                    in[i] = iy < 0 || iy >= j->H ? NULL
                            : expand ? ebuf + (iy - lo) * WE : j->X + n * j->sn + iy * j->sh;
                }
                dw_row(in, j->W, expand ? Es : j->sw, Es, j->Wo, j->s, wd, bd,
                       dbuf + (r - r0 + oy - oy0) * j->Wo * Es, Es, j->act_d, zero);
            }
        }
        /* the residual's rows: image r0 / Ho's from row r0 % Ho on, the next images' after */
        const float *R = j->residual ? j->X + r0 / j->Ho * j->sn + r0 % j->Ho * j->sh + f0 : NULL;
        if (sh->partial)
            gemm(j->isa, sp, (r1 - r0) * j->Wo, Es, f1 - f0, dbuf, Es, j->Wp + f0 * j->E, j->E,
                 e0, sh->P ? sh->P + r0 * j->Wo * j->F + f0 : j->Y + r0 * j->Wo * j->ldy + f0,
                 sh->P ? j->F : j->ldy, NULL, NULL, 0, ACT_NONE);
        else
            gemm(j->isa, sp, (r1 - r0) * j->Wo, j->E, f1 - f0, dbuf, j->E, j->Wp + f0 * j->E,
                 j->E, 0, j->Y + r0 * j->Wo * j->ldy + f0, j->ldy, j->bp ? j->bp + f0 : NULL, R,
                 j->sw, j->act_p);
    }
    return 0;
}

/* Part pe's expanded channels when p's parts split them: whole panels of We's filters. */
static void eslice(const block_job *j, split_t p, int pe, idx *e0, idx *e1) {
    const idx NE = pw_rows_shape(j->isa, j->E)->nv * j->isa->vw, epanels = (j->E + NE - 1) / NE;
    *e0 = min_i(j->E, epanels * pe / p.ep * NE);
    *e1 = min_i(j->E, epanels * (pe + 1) / p.ep * NE);
}

/* The expanded channels [e0, e1) that part computes of a block whose parts split them:
 * 1, or 0 when they do not (then the parts split the output rows or filters). The packing
 * gives each part the rows [e0, e1) of Wp to pack, so that each reads its own slice from
 * its own cache. */
int pw_block_eslice(const block_job *j, int part, int parts, idx *e0, idx *e1) {
    const split_t p = plan(j, parts);
    if (p.ep <= 1) return 0;
    eslice(j, p, part % p.ep, e0, e1);
    return 1;
}

/* Group pm takes the rows [R·pm/mp, R·(pm+1)/mp); its fp parts, a slice of whole panels of
 * the filters each, split as pw_taps_pack_part splits them, so each reads what it packed. */
void pw_block_part(void *arg, int part, int parts) {
    block_job *j = arg;
    const split_t p = plan(j, parts);
    const int pm = part / (p.fp * p.ep), pf = part % p.fp;  /* the row group, the filters */
    const idx R = j->N * j->Ho, g0 = R * pm / p.mp, g1 = R * (pm + 1) / p.mp;
    const idx NR = pw_rows_shape(j->isa, j->F)->nv * j->isa->vw, panels = (j->F + NR - 1) / NR;
    share_t sh = {g0, g1, min_i(j->F, panels * pf / p.fp * NR),
                  min_i(j->F, panels * (pf + 1) / p.fp * NR), 0, j->E, p.ep > 1, NULL};
    if (p.ep > 1) {  /* a slice of whole panels of the expansion's filters */
        const int pe = part % p.ep;
        eslice(j, p, pe, &sh.e0, &sh.e1);
        sh.P = pe == 0 ? NULL : j->partial + (pe - 1) * j->N * j->Ho * j->Wo * j->F;
        if (part == 0) j->esplit = p.ep;
    }
    /* AVX2 only: the AVX-512 split stays as it was measured */
    const int steal = j->isa->vw == 8 && p.fp == 1 && p.ep == 1 && p.mp == parts && parts > 1;
    if (pm < p.mp && (g0 < g1 || steal) && sh.f0 < sh.f1 && sh.e0 < sh.e1 &&
        block_driver(j, p.rows, &sh, steal, part, parts) != 0)
        atomic_store(&j->failed, 1);
    else if (p.ep > 1 && sh.e0 >= sh.e1 && sh.P != NULL)  /* nothing of its own: zeros */
        memset(sh.P, 0, (size_t)(j->N * j->Ho * j->Wo * j->F) * sizeof(float));
}

/* After a run whose parts split the expanded channels: Y = act_p(Y + the other parts'
 * partial products + bp [+ X]). */
void pw_block_reduce(const block_job *j) {
    const idx M = j->N * j->Ho * j->Wo, F = j->F, HW = j->Ho * j->Wo;
    for (idx m = 0; m < M; m++) {
        float *restrict y = j->Y + m * j->ldy;
        for (int p = 1; p < j->esplit; p++) {
            const float *restrict a = j->partial + ((p - 1) * M + m) * F;
            for (idx f = 0; f < F; f++) y[f] += a[f];
        }
        if (j->bp)
            for (idx f = 0; f < F; f++) y[f] += j->bp[f];
        if (j->residual) {
            const idx n = m / HW, q = m % HW;
            const float *restrict r = j->X + n * j->sn + q / j->Wo * j->sh + q % j->Wo * j->sw;
            for (idx f = 0; f < F; f++) y[f] += r[f];
        }
        /* NaN stays NaN, as in the kernels' epilogue */
        if (j->act_p != ACT_NONE)
            for (idx f = 0; f < F; f++) y[f] = y[f] < 0.0f ? 0.0f : y[f];
        if (j->act_p == ACT_RELU6)
            for (idx f = 0; f < F; f++) y[f] = y[f] > 6.0f ? 6.0f : y[f];
    }
}
#endif
