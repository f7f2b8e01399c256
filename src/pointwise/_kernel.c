/* Float32 GEMM kernels for the 1x1 convolution, with the epilogue fused, and a small thread
 * pool that shares each call among the cores.
 *
 * Y = act(A @ B + bias) where the small operand is read straight from memory and the large
 * one is cut into panels. Each output tile is produced in registers over the whole K block
 * and, on the last block, gets its bias and activation before it is stored: the output is
 * written once, which is what NumPy's separate passes (and OpenBLAS's packing of the large
 * operand) cannot do. Two drivers share one micro-kernel:
 *
 *   rows  (channels-last):  Y[m, :]   = act(X[m, :] @ W + b)      X: M x K, W: K x N
 *   cols  (channels-first): Y[n][:, p] = act(W @ X[n][:, p] + b)   W: F x K, X[n]: K x P
 *
 * Each driver works on a range of rows or columns; run_parts() hands the ranges to the pool
 * with the GIL released.
 * Kernels exist for AVX-512 and for AVX2 with FMA. AVX-512 is used where the CPU has it; the
 * AVX2 ones run only when select("avx2") asks for them: they beat NumPy wherever the epilogue
 * is fused or the shape is memory-bound, but on compute-bound plain GEMMs OpenBLAS's own AVX2
 * kernels were faster (Zen 4 running both: 5.0 against 10.1 ms at 7x7 2048->512, N=8). On
 * any other CPU isa() is None and pointwise runs on NumPy's BLAS.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef Py_ssize_t idx;

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define PW_X86 1
#include <immintrin.h>
#include <pthread.h>
enum { ACT_NONE = 0, ACT_RELU = 1, ACT_RELU6 = 2 };
enum { KC = 256 };       /* K block of the rows driver: an A row slice stays in L1 */
enum { KC_COLS = 512 };  /* K block of the cols driver */
/* The cols driver reads a full-width panel of X in place, unpacked, up to this size: at few
 * channels the copy cost as much as the GEMM. A/B in one process, N=8, bias+ReLU: 1.1-1.4x
 * at 112x112 32->16, 1.2x at 56x56 144->24 and 28x28 192->16 (a 36 KiB panel, past L1 but
 * still faster from L2), no change elsewhere. */
/* Images of fewer panels than this share panels (see cols_driver): at 14x14 with 48-wide
 * panels, sharing beat a 4-wide last panel per image by 4-10% (384->64, 480->16..64,
 * 512->24..112, N=8, A/B in both orders); at 4 the rule had cut those images. */
enum { SPAN_PANELS = 8 };
#ifndef IN_PLACE_B_BYTES
#define IN_PLACE_B_BYTES (48 * 1024)
#endif

/* C[MR x NV*VW] (+)= A[MR x kc] @ Bp[kc x NV*VW], VW floats per vector (16 AVX-512, 8 AVX2).
 * A's rows are read in place (row stride lda), three row pointers per three rows so that
 * every broadcast is one addressing mode. Bp's rows are ldb floats apart: a packed panel,
 * zero-padded to NV*VW columns (ldb = NV*VW), or, for a full-width panel, the operand in
 * place (the cols driver's small-K panels, which packing would cost as much as they take).
 * first: C is overwritten rather than accumulated. last: bias, the residual R (a matrix
 * like C, row stride ldr; ResNet's shortcut) and the activation are applied.
 * mr rows and nr columns of the tile are stored (the rest is padding).
 * The two instruction sets differ only in their vector type and masked loads and stores. */
#define KERNEL_BODY(MR, NV, VW, VEC, SETZERO, LOAD, SET1, FMADD, ADD, MAX, MIN, MASK_T, MASK, \
                    MLOAD, MSTORE)                                                           \
    VEC acc[MR][NV];                                                                         \
    const float *ab[(MR + 2) / 3];                                                           \
    _Pragma("GCC unroll 32") for (int q = 0; q < (MR + 2) / 3; q++) ab[q] = A + 3 * q * lda;  \
    _Pragma("GCC unroll 32") for (int r = 0; r < MR; r++)                                    \
        _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++) acc[r][v] = SETZERO();           \
    const idx next = MR * lda;                                                               \
    if (last && R) /* the residual tile, read at the end: fetch it while the tile computes */ \
        _Pragma("GCC unroll 32") for (int r = 0; r < MR; r++)                                \
            _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++)                             \
                if (r < mr) _mm_prefetch((const char *)(R + r * ldr + v * VW), _MM_HINT_T0); \
    /* The output tile's lines, fetched while the tile computes rather than when the stores \
     * reach them: 3-8% at 56x56 64->256, 24->144 and 28x28 128->512, N=8 (A/B, both orders); \
     * none at one vector per row (24-row tiles), where it cost a little. */                 \
    if (NV >= 2 && last)                                                                     \
        _Pragma("GCC unroll 32") for (int r = 0; r < MR; r++)                                \
            _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++)                             \
                if (r < mr) __builtin_prefetch(C + r * ldc + v * VW, 1, 3);                  \
    for (idx k = 0; k < kc; k++) {                                                           \
        if ((k & 15) == 0) /* the next tile's rows, one line each per 16 steps */            \
            _Pragma("GCC unroll 32") for (int r = 0; r < MR; r++)                            \
                _mm_prefetch((const char *)(ab[r / 3] + (r % 3) * lda + next + k), _MM_HINT_T0); \
        VEC b[NV];                                                                           \
        _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++) b[v] = LOAD(Bp + v * VW);        \
        _Pragma("GCC unroll 32") for (int r = 0; r < MR; r++) {                              \
            VEC a = SET1(ab[r / 3][(r % 3) * lda + k]);                                      \
            _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++)                             \
                acc[r][v] = FMADD(a, b[v], acc[r][v]);                                       \
        }                                                                                    \
        Bp += ldb;                                                                           \
    }                                                                                        \
    const VEC zero = SETZERO(), six = SET1(6.0f);                                            \
    _Pragma("GCC unroll 32") for (int r = 0; r < MR; r++) {                                  \
        if (r >= mr) break;                                                                  \
        _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++) {                               \
            const MASK_T m = MASK(nr - v * VW);                                              \
            float *c = C + r * ldc + v * VW;                                                 \
            VEC t = acc[r][v];                                                               \
            if (!first) t = ADD(t, MLOAD(c, m));                                             \
            if (last) {                                                                      \
                if (bcol) t = ADD(t, MLOAD(bcol + v * VW, m));                               \
                if (brow) t = ADD(t, SET1(brow[r]));                                         \
                if (R) t = ADD(t, MLOAD(R + r * ldr + v * VW, m));                           \
                /* max/min return their second operand when one is NaN: NaN stays */         \
                if (act != ACT_NONE) t = MAX(zero, t);                                       \
                if (act == ACT_RELU6) t = MIN(six, t);                                       \
            }                                                                                \
            MSTORE(c, m, t);                                                                 \
        }                                                                                    \
    }

#define KERNEL_ARGS                                                                          \
    (idx kc, const float *restrict A, idx lda, const float *restrict Bp, idx ldb,            \
     float *restrict C,                                                                      \
     idx ldc, int mr, int nr, int first, int last, const float *bcol, const float *brow,     \
     const float *R, idx ldr, int act)

/* AVX-512: masks are bit masks. */
#define T512 __attribute__((target("avx512f,fma")))
T512 static inline __mmask16 mask16(int lanes) {
    return lanes >= 16 ? (__mmask16)0xFFFF : lanes <= 0 ? 0 : (__mmask16)((1u << lanes) - 1);
}
#define MLOAD512(p, m) _mm512_maskz_loadu_ps((m), (p))
#define MSTORE512(p, m, t) _mm512_mask_storeu_ps((p), (m), (t))
#define DEF_KERNEL512(MR, NV)                                                                \
    T512 static void k512_##MR##_##NV KERNEL_ARGS {                                          \
        KERNEL_BODY(MR, NV, 16, __m512, _mm512_setzero_ps, _mm512_loadu_ps, _mm512_set1_ps,   \
                    _mm512_fmadd_ps, _mm512_add_ps, _mm512_max_ps, _mm512_min_ps, __mmask16,  \
                    mask16, MLOAD512, MSTORE512)                                             \
    }

/* AVX2: masks are vectors of all-ones lanes. */
#define T256 __attribute__((target("avx2,fma")))
T256 static inline __m256i mask8(int lanes) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
#define MLOAD256(p, m) _mm256_maskload_ps((p), (m))
#define MSTORE256(p, m, t) _mm256_maskstore_ps((p), (m), (t))
#define DEF_KERNEL256(MR, NV)                                                                \
    T256 static void k256_##MR##_##NV KERNEL_ARGS {                                          \
        KERNEL_BODY(MR, NV, 8, __m256, _mm256_setzero_ps, _mm256_loadu_ps, _mm256_set1_ps,    \
                    _mm256_fmadd_ps, _mm256_add_ps, _mm256_max_ps, _mm256_min_ps, __m256i,    \
                    mask8, MLOAD256, MSTORE256)                                              \
    }

typedef void (*kern_t)(idx, const float *, idx, const float *, idx, float *, idx, int, int, int, int,
                       const float *, const float *, const float *, idx, int);

/* Kernels by rows (MR) and vectors per row (NV): every MR has one for each NV up to its
 * widest, so the last, narrower panel of a row of tiles runs without wasted lanes. Tiles
 * keep MR x NV accumulators in registers: 24 of the 32 AVX-512 ones, 12 of the 16 AVX2. */
DEF_KERNEL512(6, 1) DEF_KERNEL512(6, 2) DEF_KERNEL512(6, 3) DEF_KERNEL512(6, 4)
DEF_KERNEL512(9, 1) DEF_KERNEL512(9, 2) DEF_KERNEL512(9, 3)
DEF_KERNEL512(12, 1) DEF_KERNEL512(12, 2)
DEF_KERNEL512(24, 1)
DEF_KERNEL512(8, 1) DEF_KERNEL512(8, 2) DEF_KERNEL512(8, 3)
DEF_KERNEL512(3, 1) DEF_KERNEL512(3, 2) DEF_KERNEL512(3, 3) DEF_KERNEL512(3, 4)
DEF_KERNEL256(6, 1) DEF_KERNEL256(6, 2)
DEF_KERNEL256(12, 1)
DEF_KERNEL256(3, 1) DEF_KERNEL256(3, 2)

typedef struct {
    int mr, nv;          /* rows of a tile, vectors in the widest panel */
    kern_t by_nv[5];     /* kernel for a panel of 1..nv vectors */
    kern_t tail[5];      /* three-row kernel for the last rows */
} shape_t;

/* An instruction set: its vector width, and its tile shapes by class. The rows driver takes
 * class min(ceil(N / vw), classes): the narrowest tile that covers N, or the widest. */
typedef struct {
    const char *name;
    int vw, classes;
    shape_t shapes[5];   /* [class], class 1.. */
    shape_t cols;        /* the tile of the cols driver */
    shape_t cols_small;  /* ... below COLS_SMALL_F filters, where row tails would cost */
} isa_t;

/* Below this many filters the cols driver takes 8-row tiles (no tail for any multiple of
 * 8) over 6-row ones: 1.21x at 28x28 192->16, 1.05x at 14x14 384->64, N=8 (A/B in one run);
 * at 512 filters and up, 6x64 tiles were 0-6% faster. */
enum { COLS_SMALL_F = 128 };

static const isa_t AVX512 = {
    "avx512", 16, 4,
    {{0, 0, {0}, {0}},
     {24, 1, {0, k512_24_1}, {0, k512_3_1}},
     {12, 2, {0, k512_12_1, k512_12_2}, {0, k512_3_1, k512_3_2}},
     {9, 3, {0, k512_9_1, k512_9_2, k512_9_3}, {0, k512_3_1, k512_3_2, k512_3_3}},
     {6, 4, {0, k512_6_1, k512_6_2, k512_6_3, k512_6_4}, {0, k512_3_1, k512_3_2, k512_3_3, k512_3_4}}},
    {6, 4, {0, k512_6_1, k512_6_2, k512_6_3, k512_6_4}, {0, k512_3_1, k512_3_2, k512_3_3, k512_3_4}},
    {8, 3, {0, k512_8_1, k512_8_2, k512_8_3}, {0, k512_3_1, k512_3_2, k512_3_3}},
};

static const isa_t AVX2 = {
    "avx2", 8, 2,
    {{0, 0, {0}, {0}},
     {12, 1, {0, k256_12_1}, {0, k256_3_1}},
     {6, 2, {0, k256_6_1, k256_6_2}, {0, k256_3_1, k256_3_2}}},
    {6, 2, {0, k256_6_1, k256_6_2}, {0, k256_3_1, k256_3_2}},
    {6, 2, {0, k256_6_1, k256_6_2}, {0, k256_3_1, k256_3_2}},
};

static const shape_t *cols_shape(const isa_t *isa, idx F) {
    return F < COLS_SMALL_F ? &isa->cols_small : &isa->cols;
}

static const shape_t *rows_shape(const isa_t *isa, idx N) {
    idx c = (N + isa->vw - 1) / isa->vw;
    return &isa->shapes[c < isa->classes ? (c < 1 ? 1 : c) : isa->classes];
}

static inline idx min_i(idx a, idx b) { return a < b ? a : b; }

/* Per-thread work buffers, kept between calls and grown when needed: a fresh large
 * allocation per call is a fresh mmap, and its page faults cost more than a small GEMM.
 * They are freed when their thread ends (a pthread key's destructor), so Python threads
 * that come and go leave nothing behind. */
typedef struct {
    float *buf[2];
    size_t size[2];
} scratch_t;

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *p) {
    scratch_t *s = p;
    free(s->buf[0]);
    free(s->buf[1]);
    free(s);
}

static void scratch_init(void) { pthread_key_create(&scratch_key, scratch_free); }

static float *scratch(int which, size_t floats) {
    pthread_once(&scratch_once, scratch_init);
    scratch_t *s = pthread_getspecific(scratch_key);
    if (s == NULL) {
        s = calloc(1, sizeof *s);
        if (s == NULL || pthread_setspecific(scratch_key, s) != 0) {
            free(s);
            return NULL;
        }
    }
    size_t bytes = (floats * sizeof(float) + 63) / 64 * 64;
    if (bytes > s->size[which]) {
        free(s->buf[which]);
        s->buf[which] = aligned_alloc(64, bytes);
        s->size[which] = s->buf[which] ? bytes : 0;
    }
    return s->buf[which];
}

/* Bp[k, 0:NR] = B[k, 0:nr] for k < kc, zero-padded to NR columns. */
static void pack_panel(const float *B, idx ldb, idx kc, int nr, int NR, float *Bp) {
    for (idx k = 0; k < kc; k++) {
        memcpy(Bp + k * NR, B + k * ldb, (size_t)nr * sizeof(float));
        if (nr < NR) memset(Bp + k * NR + nr, 0, (size_t)(NR - nr) * sizeof(float));
    }
}

/* One tile of rows [i, i + mr) with the kernel `kern` (MR rows) or, for the last rows,
 * a three-row kernel reading a zero-padded copy when fewer than three remain. */
static void tile_rows(kern_t kern, kern_t tail, int MR, idx i, idx m1, idx kc, const float *A,
                      idx lda, const float *Bp, idx ldb, float *C, idx ldc, int nr, int first, int last,
                      const float *bcol, const float *brow, const float *R, idx ldr, int act,
                      idx bias_step) {
    for (; i + MR <= m1; i += MR)
        kern(kc, A + i * lda, lda, Bp, ldb, C + i * ldc, ldc, MR, nr, first, last, bcol,
             brow ? brow + i * bias_step : NULL, R ? R + i * ldr : NULL, ldr, act);
    for (; i < m1; i += 3) {
        int mr = (int)min_i(m1 - i, 3);
        if (mr == 3) {
            tail(kc, A + i * lda, lda, Bp, ldb, C + i * ldc, ldc, 3, nr, first, last, bcol,
                 brow ? brow + i * bias_step : NULL, R ? R + i * ldr : NULL, ldr, act);
        } else {
            float pad[3 * KC_COLS];
            for (int r = 0; r < 3; r++)
                for (idx k = 0; k < kc; k++) pad[r * kc + k] = r < mr ? A[(i + r) * lda + k] : 0.0f;
            tail(kc, pad, kc, Bp, ldb, C + i * ldc, ldc, mr, nr, first, last, bcol,
                 brow ? brow + i * bias_step : NULL, R ? R + i * ldr : NULL, ldr, act);
        }
    }
}

/* Where the rows of a channels-last input lie when they are not evenly spaced: row
 * m = (n, i, j) of an (N, Ho, Wo, C) view starts at n * sn + i * sh + j * sw (in floats).
 * A strided convolution reads such a view; its rows are gathered slab by slab into a
 * buffer that stays in L2, instead of into a full copy of the input. */
typedef struct {
    idx ho, wo, sn, sh, sw;
} grid_t;

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
                       const grid_t *grid, const float *W, idx ldw, float *Y, idx ldy,
                       const float *bias, const float *R, idx ldr, int act) {
    const shape_t *s = rows_shape(isa, N);
    const int vw = isa->vw, NR = s->nv * vw;
    const idx kcb = min_i(K, KC);
    /* The packed W block (kcb x NC) is kept in L2, 512 KiB of it. */
    idx NC = (idx)(512 * 1024 / sizeof(float)) / kcb / NR * NR;
    if (NC < NR) NC = NR;
    if (NC > N) NC = N;
    const idx slab = 4 * s->mr * 8;
    float *Bp = scratch(0, (size_t)(kcb * (NC + NR)));
    float *G = grid ? scratch(1, (size_t)(slab * kcb)) : NULL;
    if (Bp == NULL || (grid && G == NULL)) return -1;
    for (idx jc = 0; jc < N; jc += NC) {
        const idx nc = min_i(N - jc, NC);
        for (idx pc = 0; pc < K; pc += KC) {
            const idx kc = min_i(K - pc, KC);
            const int first = pc == 0, last = pc + kc >= K;
            for (idx j = 0; j < nc; j += NR) {
                const int nr = (int)min_i(nc - j, NR);
                pack_panel(W + pc * ldw + jc + j, ldw, kc, nr, (nr + vw - 1) / vw * vw, Bp + j * kc);
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
                    tile_rows(s->by_nv[nv], s->tail[nv], s->mr, 0, i1 - i, kc, A, lda,
                              Bp + j * kc, nv * vw, Y + i * ldy + jc + j, ldy, nr, first, last,
                              bias ? bias + jc + j : NULL, NULL, R ? R + i * ldr + jc + j : NULL,
                              ldr, act, 0);
                }
            }
        }
    }
    return 0;
}

/* Channels-first: for the flattened columns q in [q0, q1) of N images of P pixels each
 * (q = n * P + p), Y[n][:, p] = act(W @ X[n][:, p] + bias). Columns go in panels of NR; a
 * panel that spans two images (small images, see below) is computed into a scratch tile and
 * then copied out, the others straight into Y. */
static int cols_driver(const isa_t *isa, idx q0, idx q1, idx P, idx K, idx F, const float *W,
                       idx ldw, const float *X, idx xn, idx xc, float *Y, idx yn, idx yf,
                       const float *bias, int act) {
    const shape_t *s = cols_shape(isa, F);
    const int vw = isa->vw, NR = s->nv * vw;
    const idx kcb = min_i(K, KC_COLS);
    float *Bp = scratch(0, (size_t)(kcb * NR));
    float *tile = scratch(1, (size_t)(F * NR));
    if (Bp == NULL || tile == NULL) return -1;
    for (idx q = q0, nr_ = 0; q < q1; q += nr_) {
        const idx n = q / P, p = q % P;
        /* Images are cut at their edges unless that leaves a narrow last panel in an image
         * of fewer than SPAN_PANELS panels (7x7 = 49 pixels, 14x14 = 196 in 48-wide
         * panels): such images share panels. */
        nr_ = min_i(q1 - q, P % NR == 0 || P >= SPAN_PANELS * NR ? min_i(NR, P - p) : NR);
        const int nr = (int)nr_, nv = (nr + vw - 1) / vw, width = nv * vw;  /* packed row */
        const int direct = p + nr <= P;   /* the panel lies in one image */
        float *C = direct ? Y + n * yn + p : tile;
        const idx ldc = direct ? yf : NR;
        for (idx pc = 0; pc < K; pc += KC_COLS) {
            const idx kc = min_i(K - pc, KC_COLS);
            const float *B = Bp;
            idx ldb = width;
            if (direct && nr == width && kc * width * (idx)sizeof(float) <= IN_PLACE_B_BYTES) {
                /* a full panel of few channels: read in place, next panel's lines fetched */
                B = X + n * xn + pc * xc + p;
                ldb = xc;
                for (idx k = 0; k < kc; k++)
                    for (int l = 0; l < NR; l += 16)
                        _mm_prefetch((const char *)(B + k * xc + nr + l), _MM_HINT_T0);
            } else {
            /* pack X[:, pc:pc+kc, columns q..q+nr) image by image */
            for (int j = 0; j < nr;) {
                const idx qq = q + j, nn = qq / P, pp = qq % P;
                const int run = (int)min_i(P - pp, nr - j);
                const float *src = X + nn * xn + pc * xc + pp;
                for (idx k = 0; k < kc; k++) {
                    /* Each channel is its own stream, too many for the hardware prefetcher
                     * when C is large: fetch the next panel's four lines of this row now. */
                    const float *row = src + k * xc;
                    for (int l = 0; l < NR; l += 16)  /* 16 floats: a cache line */
                        _mm_prefetch((const char *)(row + run + l), _MM_HINT_T0);
                    memcpy(Bp + k * width + j, row, (size_t)run * sizeof(float));
                }
                j += run;
            }
            if (nr < width)
                for (idx k = 0; k < kc; k++) memset(Bp + k * width + nr, 0, (size_t)(width - nr) * sizeof(float));
            }
            tile_rows(s->by_nv[nv], s->tail[nv], s->mr, 0, F, kc, W + pc, ldw, B, ldb, C, ldc, nr,
                      pc == 0, pc + kc >= K, NULL, bias, NULL, 0, act, 1);
        }
        if (!direct)
            for (int j = 0; j < nr;) {
                const idx qq = q + j, nn = qq / P, pp = qq % P;
                const int run = (int)min_i(P - pp, nr - j);
                for (idx f = 0; f < F; f++)
                    memcpy(Y + nn * yn + f * yf + pp, tile + f * NR + j, (size_t)run * sizeof(float));
                j += run;
            }
    }
    return 0;
}

/* The instruction set a name asks for, if this CPU runs it. */
static const isa_t *isa_named(const char *name) {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("fma")) return NULL;
    if (strcmp(name, "avx512") == 0 && __builtin_cpu_supports("avx512f")) return &AVX512;
    if (strcmp(name, "avx2") == 0 && __builtin_cpu_supports("avx2")) return &AVX2;
    return NULL;
}

/* ---- a small spinning thread pool ------------------------------------------------------
 * Handing work to a sleeping thread costs ~60 us on these VMs (a futex wake), as long as a
 * small convolution. So a worker, once done, spins for SPIN_NS watching for the next job
 * before it sleeps; back-to-back calls (a network's layers) then start in about a
 * microsecond. The caller always takes part 0 itself. Only one job runs at a time; a call
 * that finds the pool busy (another Python thread) runs single-threaded instead of waiting.
 */
#include <stdatomic.h>
#include <time.h>

enum { MAX_THREADS = 64 };
#define SPIN_NS 200000L

typedef void (*part_fn)(void *arg, int part, int parts);

static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;   /* guards sleeping */
static pthread_cond_t pool_cv = PTHREAD_COND_INITIALIZER;
static pthread_mutex_t job_mu = PTHREAD_MUTEX_INITIALIZER;    /* one job at a time */
static atomic_uint job_gen;
static atomic_int job_pending;
static part_fn job_fn;
static void *job_arg;
static int job_parts;
static int n_workers;

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

typedef struct { int me; unsigned seen; } worker_start;

static void *worker_main(void *p) {
    /* me: 1 .. n_workers. seen: the generation before the worker existed (the creator holds
     * job_mu, so no job can be posted between the two), read by the creator: a worker that
     * read it itself could miss the job posted right after its creation. */
    const int me = ((worker_start *)p)->me;
    unsigned seen = ((worker_start *)p)->seen;
    free(p);
    for (;;) {
        unsigned g = atomic_load_explicit(&job_gen, memory_order_acquire);
        if (g == seen) {
            const long until = now_ns() + SPIN_NS;
            for (int i = 0; g == seen; i++) {
                _mm_pause();
                g = atomic_load_explicit(&job_gen, memory_order_acquire);
                if ((i & 255) == 255 && now_ns() > until) break;
            }
            if (g == seen) {
                pthread_mutex_lock(&pool_mu);
                while ((g = atomic_load_explicit(&job_gen, memory_order_acquire)) == seen)
                    pthread_cond_wait(&pool_cv, &pool_mu);
                pthread_mutex_unlock(&pool_mu);
            }
        }
        seen = g;
        if (me < job_parts) job_fn(job_arg, me, job_parts);
        atomic_fetch_sub_explicit(&job_pending, 1, memory_order_acq_rel);
    }
    return NULL;
}

/* A forked child has none of the parent's threads: start the pool afresh on first use. */
static void pool_after_fork(void) {
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t c = PTHREAD_COND_INITIALIZER;
    pool_mu = m;
    job_mu = m;
    pool_cv = c;
    n_workers = 0;
}

/* Run fn(arg, part, parts) for part in [0, parts), on up to parts threads. */
static void run_parts(part_fn fn, void *arg, int parts) {
    if (parts > MAX_THREADS) parts = MAX_THREADS;
    if (parts <= 1 || pthread_mutex_trylock(&job_mu) != 0) {
        for (int p = 0; p < parts; p++) fn(arg, p, parts);
        return;
    }
    while (n_workers < parts - 1) {  /* grow the pool; workers are never stopped */
        pthread_t t;
        worker_start *w = malloc(sizeof *w);
        if (w == NULL) break;
        w->me = n_workers + 1;
        w->seen = atomic_load_explicit(&job_gen, memory_order_acquire);
        if (pthread_create(&t, NULL, worker_main, w) != 0) {
            free(w);
            break;
        }
        pthread_detach(t);
        n_workers++;
    }
    if (parts > n_workers + 1) parts = n_workers + 1;
    job_fn = fn;
    job_arg = arg;
    job_parts = parts;
    atomic_store_explicit(&job_pending, n_workers, memory_order_release);
    pthread_mutex_lock(&pool_mu);
    atomic_fetch_add_explicit(&job_gen, 1, memory_order_acq_rel);
    pthread_cond_broadcast(&pool_cv);
    pthread_mutex_unlock(&pool_mu);
    fn(arg, 0, parts);
    while (atomic_load_explicit(&job_pending, memory_order_acquire) > 0) _mm_pause();
    pthread_mutex_unlock(&job_mu);
}

/* ---- the host's OpenMP team --------------------------------------------------------------
 * Inside a torch model our pool and torch's OpenMP team take turns on the same cores, and
 * each spins for a while after its own work: every hand-over then runs two busy threads per
 * core. (A converted ResNet-50 ran 568 ms against 424 ms on torch alone.) So a caller that
 * already has libgomp loaded, torch, may bind to it (openmp()) and run a call's parts on that
 * very team, whose threads are the ones still spinning from the previous layer. GOMP_parallel
 * is the entry point GCC emits for `#pragma omp parallel`; it is stable across libgomp
 * versions since GCC 4.9. */
#include <dlfcn.h>

static void (*gomp_parallel)(void (*)(void *), void *, unsigned, unsigned);
static int (*omp_thread_num)(void);
static int (*omp_num_threads)(void);

typedef struct { part_fn fn; void *arg; int parts; } omp_job;

static void omp_body(void *p) {
    const omp_job *j = p;
    const int team = omp_num_threads();
    for (int part = omp_thread_num(); part < j->parts; part += team) j->fn(j->arg, part, j->parts);
}

/* Bind to the libgomp at `path` if, and only if, the process has already loaded it; 0 leaves
 * any earlier binding as it was. Nothing is ever unloaded, so a call still running on an
 * earlier binding stays valid. */
static int bind_openmp(const char *path) {
    void *h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    if (h == NULL) return 0;
    void *par = dlsym(h, "GOMP_parallel"), *num = dlsym(h, "omp_get_thread_num"),
         *team = dlsym(h, "omp_get_num_threads");
    if (par == NULL || num == NULL || team == NULL) {
        dlclose(h);
        return 0;
    }
    /* the handle is kept: the runtime must outlive the pointers */
    *(void **)&gomp_parallel = par;
    *(void **)&omp_thread_num = num;
    *(void **)&omp_num_threads = team;
    return 1;
}

static void run_parts_openmp(part_fn fn, void *arg, int parts) {
    if (parts <= 1 || gomp_parallel == NULL) {
        run_parts(fn, arg, parts);
        return;
    }
    omp_job j = {fn, arg, parts};
    gomp_parallel(omp_body, &j, (unsigned)parts, 0);
}

/* ---- jobs ------------------------------------------------------------------------------ */
typedef struct {
    const isa_t *isa;
    idx M, K, N, ldx, ldw, ldy;
    const float *X, *W, *bias;
    float *Y;
    int act;
    atomic_int failed;
    const grid_t *grid;  /* NULL: X's rows are ldx apart */
    const float *R;      /* NULL, or the residual added before the activation */
    idx ldr;
} rows_job;

static void rows_part(void *arg, int part, int parts) {
    rows_job *j = arg;
    const idx unit = rows_shape(j->isa, j->N)->mr;  /* whole tiles: only the last part has a tail */
    const idx per = (j->M + parts * unit - 1) / (parts * unit) * unit;
    const idx m0 = min_i(j->M, part * per), m1 = min_i(j->M, m0 + per);
    if (m0 < m1 && rows_driver(j->isa, m0, m1, j->K, j->N, j->X, j->ldx, j->grid, j->W, j->ldw, j->Y,
                               j->ldy, j->bias, j->R, j->ldr, j->act) != 0)
        atomic_store(&j->failed, 1);
}

typedef struct {
    const isa_t *isa;
    idx N, P, K, F, ldw, xn, xc, yn, yf;
    const float *W, *X, *bias;
    float *Y;
    int act;
    atomic_int failed;
} cols_job;

static void cols_part(void *arg, int part, int parts) {
    cols_job *j = arg;
    const idx Q = j->N * j->P;
    /* whole images per part when they divide evenly, else columns in whole panels */
    const idx unit = j->N % parts == 0 ? j->P : cols_shape(j->isa, j->F)->nv * j->isa->vw;
    const idx units = (Q + unit - 1) / unit;
    const idx q0 = min_i(Q, units * part / parts * unit), q1 = min_i(Q, units * (part + 1) / parts * unit);
    if (q0 < q1 && cols_driver(j->isa, q0, q1, j->P, j->K, j->F, j->W, j->ldw, j->X, j->xn, j->xc, j->Y,
                               j->yn, j->yf, j->bias, j->act) != 0)
        atomic_store(&j->failed, 1);
}
#else
typedef struct { const char *name; } isa_t;
static const isa_t *isa_named(const char *name) { (void)name; return NULL; }
static void (*gomp_parallel)(void (*)(void *), void *, unsigned, unsigned);
#endif

/* The kernels' instruction set: AVX-512 where the CPU has it, or what select() chose. */
static const isa_t *current;

/* ---- Python interface ------------------------------------------------------------------
 * rows(threads, x, w, y, bias, act) and cols(threads, w, x, y, bias, act) take NumPy arrays
 * (any object with the buffer protocol) and return True once y holds the result, or False,
 * having written nothing, when an operand is not something the kernels address directly:
 * not float32 in native byte order, misaligned, a negative stride or a non-unit stride
 * along the contiguous axis, a zero size, shapes that do not fit together, or an output
 * that may overlap an input. The caller then computes the call its own way. */

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
    if (*openmp && gomp_parallel == NULL) {
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
        run_parts_openmp(fn, job, parts);
    else
        run_parts(fn, job, parts);
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
    const isa_t *isa = isa_named(name);
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
        ok = run_released(rows_part, &j, (long long)M * K * N, threads, &j.failed, openmp);
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
        ok = run_released(cols_part, &j, (long long)N * P * K * F, threads, &j.failed, openmp);
    }
#endif
    return answer(v, n, ok);
}

static PyObject *py_openmp(PyObject *self, PyObject *args) {
    (void)self;
    const char *path;
    if (!PyArg_ParseTuple(args, "s", &path)) return NULL;
#ifdef PW_X86
    return PyBool_FromLong(bind_openmp(path));
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
    current = isa_named("avx512");
#ifdef PW_X86
    static int registered = 0;
    if (!registered) {
        pthread_atfork(NULL, NULL, pool_after_fork);
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
