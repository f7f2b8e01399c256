/* The register-tiled micro-kernels, for AVX-512 and for AVX2 with FMA, and the tables that
 * say which tile each instruction set uses for a problem.
 *
 * AVX-512 is used where the CPU has it; the AVX2 kernels run only when select("avx2") asks
 * for them: they beat NumPy wherever the epilogue is fused or the shape is memory-bound, but
 * on compute-bound plain GEMMs OpenBLAS's own AVX2 kernels were faster (Zen 4 running both:
 * 5.0 against 10.1 ms at 7x7 2048->512, N=8). On any other CPU isa() is None and pointwise
 * runs on NumPy's BLAS.
 */
#include "pointwise.h"

#ifdef PW_X86
#include <immintrin.h>
#include <string.h>

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

const shape_t *pw_cols_shape(const isa_t *isa, idx F) {
    return F < COLS_SMALL_F ? &isa->cols_small : &isa->cols;
}

const shape_t *pw_rows_shape(const isa_t *isa, idx N) {
    idx c = (N + isa->vw - 1) / isa->vw;
    return &isa->shapes[c < isa->classes ? (c < 1 ? 1 : c) : isa->classes];
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
