/* The register-tiled micro-kernels, for AVX-512 and for AVX2 with FMA, and the tables that
 * say which tile each instruction set uses for a problem.
 *
 * AVX-512 is used where the CPU has it, AVX2 with FMA otherwise (or when select("avx2") asks
 * for it). On any other CPU isa() is None and pointwise runs on NumPy's BLAS.
 */
#include "pointwise.h"

#ifdef PW_X86
#include <immintrin.h>
#include <string.h>

/* Before the K loop, on the last K block: the residual tile, read at the end, and the output
 * tile's lines, fetched while the tile computes rather than when the stores reach them: 3-8%
 * at 56x56 64->256, 24->144 and 28x28 128->512, N=8 (A/B, both orders); none at one vector
 * per row (24-row tiles), where it cost a little. */
#define PREFETCH_OUT(MR, NV, VW)                                                             \
    if (last && R)                                                                           \
        _Pragma("GCC unroll 32") for (int r = 0; r < MR; r++)                                \
            _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++)                             \
                if (r < mr) _mm_prefetch((const char *)(R + r * ldr + v * VW), _MM_HINT_T0); \
    if (NV >= 2 && last)                                                                     \
        _Pragma("GCC unroll 32") for (int r = 0; r < MR; r++)                                \
            _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++)                             \
                if (r < mr) __builtin_prefetch(C + r * ldc + v * VW, 1, 3);

/* The tile acc[MR][NV] to C: added to C unless first; on the last K block, plus the bias by
 * column (bcol) or by row (brow), plus the residual R, then the activation. mr rows and nr
 * columns are stored (the rest is padding). */
#define EPILOGUE(MR, NV, VW, VEC, SETZERO, SET1, ADD, MAX, MIN, MASK_T, MASK, MLOAD, MSTORE)   \
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

/* C[MR x NV*VW] (+)= A[MR x kc] @ Bp[kc x NV*VW], VW floats per vector (16 AVX-512, 8 AVX2).
 * A's rows are read in place (row stride lda), three row pointers per three rows so that
 * every broadcast is one addressing mode. Bp's rows are ldb floats apart: a packed panel,
 * zero-padded to NV*VW columns (ldb = NV*VW), or, for a full-width panel, the operand in
 * place (the cols driver's small-K panels, which packing would cost as much as they take).
 * first: C is overwritten rather than accumulated. last: bias, the residual R (a matrix
 * like C, row stride ldr; ResNet's shortcut) and the activation are applied (EPILOGUE).
 * The two instruction sets differ only in their vector type and masked loads and stores. */
#define KERNEL_BODY(MR, NV, VW, VEC, SETZERO, LOAD, SET1, FMADD, ADD, MAX, MIN, MASK_T, MASK, \
                    MLOAD, MSTORE)                                                           \
    KERNEL_LOOP(MR, NV, VW, VEC, SETZERO, LOAD, SET1, FMADD, PREFETCH_OUT)                   \
    EPILOGUE(MR, NV, VW, VEC, SETZERO, SET1, ADD, MAX, MIN, MASK_T, MASK, MLOAD, MSTORE)

/* KERNEL_BODY's K loop: the tile acc[MR][NV] in registers, before its epilogue. */
#define KERNEL_LOOP(MR, NV, VW, VEC, SETZERO, LOAD, SET1, FMADD, PREFETCH)                   \
    VEC acc[MR][NV];                                                                         \
    const float *ab[(MR + 2) / 3];                                                           \
    _Pragma("GCC unroll 32") for (int q = 0; q < (MR + 2) / 3; q++) ab[q] = A + 3 * q * lda;  \
    _Pragma("GCC unroll 32") for (int r = 0; r < MR; r++)                                    \
        _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++) acc[r][v] = SETZERO();           \
    const idx next = MR * lda;                                                               \
    PREFETCH(MR, NV, VW)                                                                     \
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
    }

#define KERNEL_ARGS                                                                          \
    (idx kc, const float *restrict A, idx lda, const float *restrict Bp, idx ldb,            \
     float *restrict C,                                                                      \
     idx ldc, int mr, int nr, int first, int last, const float *bcol, const float *brow,     \
     const float *R, idx ldr, int act)

/* The taps kernel: the same tile, its K loop walking the taps of a k x k convolution with the
 * accumulators held in registers. Tap t's rows of A are MR pointers, P[t * MR + r] + koff,
 * one per output pixel of the tile: an input pixel (any stride and dilation) or, in the
 * padding, a row of zeros, so the tile needs no padded copy of the image and may span image
 * rows. B_t's rows are ldb floats apart and the taps ldbt apart (packed panels, taps.c).
 * next: how far the next tile's pixels lie from this tile's (a guess the driver makes from
 * the stride; a wrong one costs a useless prefetch, never a fault). Fetching them as the
 * 1x1 kernel does took a 1x1 56x56 256->64 from 0.85x to 0.99x the rows driver's speed and
 * 56x56 128->128 3x3/2 up 6%, the other ResNet-50 3x3 layers within 2% (A/B, N=8).
 * A pointer per row costs a register each (12 at most here), where the 1x1 kernel shares
 * one between three rows; over a K loop of C steps per tap, reloading them is noise. */
#define TAPS_BODY(MR, NV, VW, VEC, SETZERO, LOAD, SET1, FMADD, ADD, MAX, MIN, MASK_T, MASK,   \
                  MLOAD, MSTORE, KLOOP)                                                      \
    VEC acc[MR][NV];                                                                         \
    const float *brow = NULL;                                                                \
    _Pragma("GCC unroll 32") for (int r = 0; r < MR; r++)                                    \
        _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++) acc[r][v] = SETZERO();           \
    PREFETCH_OUT(MR, NV, VW)                                                                 \
    for (idx t = 0; t < T; t++) {                                                            \
        const float *a[MR];                                                                  \
        _Pragma("GCC unroll 32") for (int r = 0; r < MR; r++) a[r] = P[t * MR + r] + koff;    \
        const float *b = B + t * ldbt;                                                       \
        KLOOP(MR, NV, VW, VEC, LOAD, SET1, FMADD)                                            \
    }                                                                                        \
    EPILOGUE(MR, NV, VW, VEC, SETZERO, SET1, ADD, MAX, MIN, MASK_T, MASK, MLOAD, MSTORE)

/* One step of a tap's K loop: acc += a[.][k] (broadcast) x b's row. */
#define TAPS_STEP(MR, NV, VW, VEC, LOAD, SET1, FMADD, AK)                                    \
    {                                                                                        \
        VEC bv[NV];                                                                          \
        _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++) bv[v] = LOAD(b + v * VW);        \
        _Pragma("GCC unroll 32") for (int r = 0; r < MR; r++) {                              \
            const VEC s = SET1(AK);                                                          \
            _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++)                             \
                acc[r][v] = FMADD(s, bv[v], acc[r][v]);                                      \
        }                                                                                    \
        b += ldb;                                                                            \
    }

/* A tap's K loop, step by step, the next tile's pixels fetched every 16th step (AVX-512). */
#define TAPS_STEPS(MR, NV, VW, VEC, LOAD, SET1, FMADD)                                       \
    for (idx k = 0; k < kc; k++) {                                                           \
        if ((k & 15) == 0) /* the next tile's pixels, one line each per 16 steps */          \
            _Pragma("GCC unroll 32") for (int r = 0; r < MR; r++)                            \
                _mm_prefetch((const char *)(a[r] + next + k), _MM_HINT_T0);                  \
        TAPS_STEP(MR, NV, VW, VEC, LOAD, SET1, FMADD, a[r][k])                               \
    }

/* The same in chunks of 16 steps (a line of each pixel), the fetch at the head of each
 * chunk and the chunk unrolled by two, with no test in the steps (AVX2). Zen 3, 6x2 tiles,
 * N=8, bias + ReLU, against the step loop (interleaved in one process, medians of 11):
 * 56x56 64->64 102 -> 106 GFLOP/s, 28x28 128->128 100 -> 107, 14x14 256->256 109 -> 115,
 * 7x7 512->512 107 -> 109 (/work/notes/runs/taps2/ab.py). */
#define TAPS_CHUNKS(MR, NV, VW, VEC, LOAD, SET1, FMADD)                                      \
    for (idx k0 = 0; k0 < kc; k0 += 16) {                                                    \
        _Pragma("GCC unroll 32") for (int r = 0; r < MR; r++)                                \
            _mm_prefetch((const char *)(a[r] + next + k0), _MM_HINT_T0);                     \
        const idx steps = kc - k0 < 16 ? kc - k0 : 16;                                       \
        const float *ak[MR];                                                                 \
        _Pragma("GCC unroll 32") for (int r = 0; r < MR; r++) ak[r] = a[r] + k0;             \
        _Pragma("GCC unroll 2") for (idx k = 0; k < steps; k++)                              \
            TAPS_STEP(MR, NV, VW, VEC, LOAD, SET1, FMADD, ak[r][k])                          \
    }

#define TAPS_ARGS                                                                            \
    (idx T, idx kc, const float *const *P, idx koff, idx next, const float *restrict B,      \
     idx ldb, idx ldbt, float *restrict C, idx ldc, int mr, int nr, int first, int last,     \
     const float *bcol, const float *R, idx ldr, int act)

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
#define DEF_TAPS512(MR, NV)                                                                  \
    T512 static void t512_##MR##_##NV TAPS_ARGS {                                            \
        TAPS_BODY(MR, NV, 16, __m512, _mm512_setzero_ps, _mm512_loadu_ps, _mm512_set1_ps,     \
                  _mm512_fmadd_ps, _mm512_add_ps, _mm512_max_ps, _mm512_min_ps, __mmask16,    \
                  mask16, MLOAD512, MSTORE512, TAPS_STEPS)                                   \
    }

/* AVX2: a mask is a vector of all-ones lanes, made from the count of lanes (below). */
#define T256 __attribute__((target("avx2,fma")))
T256 static inline __m256i mask8(int lanes) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
/* The kernels' "mask" is the count of lanes, and only a partial vector goes through
 * vmaskmovps: on Zen 3 its store form is microcoded, and with K in blocks every tile's C
 * went through it once per block. Zen 3, 1 thread, N=8, best of 40 calls, both builds in one
 * process (abso.py): 56x56 64->256 62 -> 75 GFLOP/s, 256->64 83 -> 88, 28x28 512->128
 * 77 -> 84, 14x14 1024->256 73 -> 75, 7x7 2048->512 65 -> 70, N=1 14x14 256->1024 79 -> 85. */
T256 static inline __m256 lload256(const float *p, int lanes) {
    return lanes >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mask8(lanes));
}
T256 static inline void lstore256(float *p, int lanes, __m256 t) {
    if (lanes >= 8)
        _mm256_storeu_ps(p, t);
    else
        _mm256_maskstore_ps(p, mask8(lanes), t);
}
static inline int lanes8(int lanes) { return lanes; }
/* PREFETCH_OUT for AVX2: the next tile's lines, MR rows on (where tiles.c's loop goes
 * next), rather than this tile's, so that they have a whole tile's time to come. Zen 3,
 * N=1, 1 thread, ResNet-50's 1x1 layers replayed in order with their own buffers, each
 * layer's output last touched a pass (~25 MB) before, both builds in one process, best of
 * 60 passes (/work/notes/runs/rows3/replay.py 1 1), this tile's -> the next tile's:
 * 56x56 64->256 82.2 -> 84.7 GFLOP/s, the same + residual over the output 65.6 -> 75.9
 * and 68.2 -> 75.3, 28x28 128->512 + residual 77.9 -> 81.1 and 81.2 -> 82.5; called
 * again at once (warm) within 1%. This tile's and the next both, or the tile after next,
 * fell between the two (20 passes). */
#define PREFETCH_OUT256(MR, NV, VW)                                                          \
    if (last && R)                                                                           \
        _Pragma("GCC unroll 32") for (int r = 0; r < MR; r++)                                \
            _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++)                             \
                if (r < mr)                                                                  \
                    _mm_prefetch((const char *)(R + (MR + r) * ldr + v * VW), _MM_HINT_T0);  \
    if (NV >= 2 && last)                                                                     \
        _Pragma("GCC unroll 32") for (int r = 0; r < MR; r++)                                \
            _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++)                             \
                if (r < mr) __builtin_prefetch(C + (MR + r) * ldc + v * VW, 1, 3);

/* A full AVX2 tile's epilogue (mr = MR rows, NV whole vectors, no bias by row) with its
 * options as constants: the sum from C unless FIRST, the residual if RES, the activation ACT;
 * bv[v] the bias, or -0.0 (x + -0.0 = x for every x, -0.0 and NaN included). The same sums
 * in the same order as EPILOGUE's. */
#define EPI_FULL256(MR, NV, FIRST, LAST, RES, ACT)                                          \
    _Pragma("GCC unroll 32") for (int r = 0; r < MR; r++)                                    \
        _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++) {                               \
            float *c = C + r * ldc + v * 8;                                                  \
            __m256 t = acc[r][v];                                                            \
            if (!(FIRST)) t = _mm256_add_ps(t, _mm256_loadu_ps(c));                          \
            if (LAST) t = _mm256_add_ps(t, bv[v]);                                           \
            if (RES) t = _mm256_add_ps(t, _mm256_loadu_ps(R + r * ldr + v * 8));             \
            if ((ACT) != ACT_NONE) t = _mm256_max_ps(_mm256_setzero_ps(), t);                \
            if ((ACT) == ACT_RELU6) t = _mm256_min_ps(_mm256_set1_ps(6.0f), t);              \
            _mm256_storeu_ps(c, t);                                                          \
        }

/* The full tile's options taken once, not per vector: EPILOGUE tests first, last, the bias,
 * the residual, the activation and the lane count at each of the tile's 12 vectors, and
 * through the tables every kernel is the generic one (a constant-folded copy of the same
 * kernel, called directly, ran the K = 64 tile at 88-91 GFLOP/s against 76-78). */
#define EPI_FAST256(MR, NV)                                                                  \
    __m256 bv[NV];                                                                           \
    if (!last) {                                                                             \
        if (first) { EPI_FULL256(MR, NV, 1, 0, 0, ACT_NONE) }                                \
        else { EPI_FULL256(MR, NV, 0, 0, 0, ACT_NONE) }                                      \
    } else {                                                                                 \
        _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++)                                 \
            bv[v] = bcol ? _mm256_loadu_ps(bcol + v * 8) : _mm256_set1_ps(-0.0f);            \
        switch ((first ? 1 : 0) | (R ? 2 : 0) | (act == ACT_RELU ? 4 : act == ACT_RELU6 ? 8 : 0)) { \
        case 0: { EPI_FULL256(MR, NV, 0, 1, 0, ACT_NONE) } break;                            \
        case 1: { EPI_FULL256(MR, NV, 1, 1, 0, ACT_NONE) } break;                            \
        case 2: { EPI_FULL256(MR, NV, 0, 1, 1, ACT_NONE) } break;                            \
        case 3: { EPI_FULL256(MR, NV, 1, 1, 1, ACT_NONE) } break;                            \
        case 4: { EPI_FULL256(MR, NV, 0, 1, 0, ACT_RELU) } break;                            \
        case 5: { EPI_FULL256(MR, NV, 1, 1, 0, ACT_RELU) } break;                            \
        case 6: { EPI_FULL256(MR, NV, 0, 1, 1, ACT_RELU) } break;                            \
        case 7: { EPI_FULL256(MR, NV, 1, 1, 1, ACT_RELU) } break;                            \
        case 8: { EPI_FULL256(MR, NV, 0, 1, 0, ACT_RELU6) } break;                           \
        case 9: { EPI_FULL256(MR, NV, 1, 1, 0, ACT_RELU6) } break;                           \
        case 10: { EPI_FULL256(MR, NV, 0, 1, 1, ACT_RELU6) } break;                          \
        default: { EPI_FULL256(MR, NV, 1, 1, 1, ACT_RELU6) } break;                          \
        }                                                                                    \
    }

#define DEF_KERNEL256(MR, NV)                                                                \
    T256 static void k256_##MR##_##NV KERNEL_ARGS {                                          \
        KERNEL_LOOP(MR, NV, 8, __m256, _mm256_setzero_ps, _mm256_loadu_ps, _mm256_set1_ps,    \
                    _mm256_fmadd_ps, PREFETCH_OUT256)                                        \
        if (mr == MR && nr == NV * 8 && brow == NULL) {                                      \
            EPI_FAST256(MR, NV)                                                              \
        } else {                                                                             \
            EPILOGUE(MR, NV, 8, __m256, _mm256_setzero_ps, _mm256_set1_ps, _mm256_add_ps,    \
                     _mm256_max_ps, _mm256_min_ps, int, lanes8, lload256, lstore256)         \
        }                                                                                    \
    }
/* The taps kernels' epilogue too: Zen 3, N=8, bias + ReLU, pw.conv2d, one build per process,
 * the two alternating, fastest of 48 calls each (/work/notes/runs/z3/ab1.py): 56x56 64->64
 * 11.12 -> 10.86 ms, 28x28 128->128 12.36 -> 11.49, 14x14 256->256 10.63 -> 10.75, 7x7
 * 512->512 14.12 -> 11.82, the 7x7/2 stem 18.27 -> 12.35 (medians swung 1.5x with the host). */
#define DEF_TAPS256(MR, NV)                                                                  \
    T256 static void t256_##MR##_##NV TAPS_ARGS {                                            \
        TAPS_BODY(MR, NV, 8, __m256, _mm256_setzero_ps, _mm256_loadu_ps, _mm256_set1_ps,      \
                  _mm256_fmadd_ps, _mm256_add_ps, _mm256_max_ps, _mm256_min_ps, int,          \
                  lanes8, lload256, lstore256, TAPS_CHUNKS)                                  \
    }

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

/* Taps kernels: the rows tiles, but at most 12 rows (a pointer register per row), each with
 * a twin of one row less. The driver covers a part's L rows with tiles of mr and mr - 1 rows
 * so that no tile is cut (49 = 4 x 6 + 5 x 5 at 7x7, N=1): a cut tile computes all its rows.
 * With the twins, 7x7 512->512 at N=1 went from 184 to 203 GFLOP/s (2 threads, best of 5). */
DEF_TAPS512(6, 1) DEF_TAPS512(6, 2) DEF_TAPS512(6, 3) DEF_TAPS512(6, 4)
DEF_TAPS512(5, 1) DEF_TAPS512(5, 2) DEF_TAPS512(5, 3) DEF_TAPS512(5, 4)
DEF_TAPS512(9, 1) DEF_TAPS512(9, 2) DEF_TAPS512(9, 3)
DEF_TAPS512(8, 1) DEF_TAPS512(8, 2) DEF_TAPS512(8, 3)
DEF_TAPS512(12, 1) DEF_TAPS512(12, 2) DEF_TAPS512(11, 1) DEF_TAPS512(11, 2)
DEF_TAPS256(6, 1) DEF_TAPS256(6, 2) DEF_TAPS256(5, 1) DEF_TAPS256(5, 2)
DEF_TAPS256(4, 1) DEF_TAPS256(4, 2) DEF_TAPS256(4, 3) DEF_TAPS256(3, 1) DEF_TAPS256(3, 2)
DEF_TAPS256(3, 3)
DEF_TAPS256(12, 1) DEF_TAPS256(11, 1)

static const tshape_t TAPS512[5] = {
    {0, 0, {0}, {0}},
    {12, 1, {0, t512_12_1}, {0, t512_11_1}},
    {12, 2, {0, t512_12_1, t512_12_2}, {0, t512_11_1, t512_11_2}},
    {9, 3, {0, t512_9_1, t512_9_2, t512_9_3}, {0, t512_8_1, t512_8_2, t512_8_3}},
    {6, 4, {0, t512_6_1, t512_6_2, t512_6_3, t512_6_4}, {0, t512_5_1, t512_5_2, t512_5_3, t512_5_4}},
};

static const tshape_t TAPS256[3] = {
    {0, 0, {0}, {0}},
    {12, 1, {0, t256_12_1}, {0, t256_11_1}},
    {6, 2, {0, t256_6_1, t256_6_2}, {0, t256_5_1, t256_5_2}},
};

/* AVX2, k x k, past one vector of filters: 4x3 tiles (12 accumulators, 3 vectors of B and
 * 4 broadcasts a step) over 6x2 (2 and 6). Zen 3, N=8, bias + ReLU, the chunked K loop
 * both (interleaved in one process, medians of 11; /work/notes/runs/taps2/ab.py):
 * 56x56 64->64 106 -> 111 GFLOP/s, 28x28 128->128 107 -> 118, 28x28 256->256 /2 113 ->
 * 121, 14x14 256->256 115 -> 126, 14x14 512->512 /2 81 -> 99, 7x7 512->512 109 -> 122,
 * the 7x7/2 stem 77 -> 80; 3x4 tiles were 0-10% below 4x3, 12x1 26-57% below 6x2.
 * Its panels are even (taps.c's panels_of): 128 filters as 3+3+3+3+2+2 vectors, not
 * 5 x 3 + 1, whose 4x1 tiles keep 4 accumulators, too few for the FMAs' latency; against
 * 5 x 3 + 1, in the same way: 28x28 128->128 0.98x, 56x56 128->128 /2 1.01x, 28x28
 * 256->256 /2 1.05x, 14x14 512->512 /2 1.04x, 7x7 512->512 1.02x (within the noise, each
 * alone; the cost of a short panel, as the FMAs' latency bounds it, is 2-6%). */
static const tshape_t TAPS256_KXK =
    {4, 3, {0, t256_4_1, t256_4_2, t256_4_3}, {0, t256_3_1, t256_3_2, t256_3_3}, 1};

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
    KC,
};

static const isa_t AVX2 = {
    "avx2", 8, 2,
    {{0, 0, {0}, {0}},
     {12, 1, {0, k256_12_1}, {0, k256_3_1}},
     {6, 2, {0, k256_6_1, k256_6_2}, {0, k256_3_1, k256_3_2}}},
    {6, 2, {0, k256_6_1, k256_6_2}, {0, k256_3_1, k256_3_2}},
    {6, 2, {0, k256_6_1, k256_6_2}, {0, k256_3_1, k256_3_2}},
    KC_AVX2,
};
_Static_assert((int)KC_AVX2 <= (int)KC_COLS, "tiles.c's tail copy holds KC_COLS floats a row");

const shape_t *pw_cols_shape(const isa_t *isa, idx F) {
    return F < COLS_SMALL_F ? &isa->cols_small : &isa->cols;
}

const shape_t *pw_rows_shape(const isa_t *isa, idx N) {
    idx c = (N + isa->vw - 1) / isa->vw;
    return &isa->shapes[c < isa->classes ? (c < 1 ? 1 : c) : isa->classes];
}

/* The taps tile for F filters and T taps: the class of the rows driver's, min(ceil(F / vw),
 * classes); on AVX2, past one vector, a k x k convolution's is TAPS256_KXK's. A 1x1 weight
 * (T = 1) is packed in the rows tile's panels, the width the fused blocks read it in. */
const tshape_t *pw_taps_shape(const isa_t *isa, idx F, idx T) {
    idx c = (F + isa->vw - 1) / isa->vw;
    c = c < isa->classes ? (c < 1 ? 1 : c) : isa->classes;
    if (isa->vw == 16) return &TAPS512[c];
    return c >= 2 && T > 1 ? &TAPS256_KXK : &TAPS256[c];
}

/* The instruction set a name asks for, if this CPU runs it. */
const isa_t *pw_isa_named(const char *name) {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("fma")) return NULL;
    if (strcmp(name, "avx512") == 0 && __builtin_cpu_supports("avx512f")) return &AVX512;
    if (strcmp(name, "avx2") == 0 && __builtin_cpu_supports("avx2")) return &AVX2;
    return NULL;
}
#else
const isa_t *pw_isa_named(const char *name) {
    (void)name;
    return NULL;
}
#endif
