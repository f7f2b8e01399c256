/* A network's head: the global average pool of a channels-last batch, and the classifier
 * y = x @ W^T + b with torch's Linear weight W (F, C) read in place.
 *
 * The classifier at a small batch is a matrix-vector product: each weight is used N times,
 * so its time is the time to stream W (5 MB for MobileNetV2's 1280 -> 1000) from memory.
 * Packing W into panels, as the rows driver does, would read it, write a copy and read that;
 * here every thread takes a range of W's rows (the filters) and reads each of them once,
 * along its contiguous C, as dot products with the N input rows: a tile of R filter rows by
 * B input rows keeps R x B vector sums in registers, so each load of x serves R filters and
 * each load of W serves B inputs, and the sums are reduced across lanes once per tile. The
 * next lines of the tile's R rows are prefetched PREFETCH_LINES ahead, since they stream
 * from memory while the FMAs run. Larger batches repeat the tile over chunks of B inputs
 * while the R rows (R x C floats) are still in L1.
 *
 * The pool sums each channel over the H x W pixels in float64 (each float32 converts
 * exactly, so the mean is float64's rounded once to float32), a block of channels at a
 * time in registers, the pixels read along their contiguous channels.
 */
#include "pointwise.h"

#ifdef PW_X86
#include <immintrin.h>

/* Lines ahead of the current one that each weight row fetches, in tiles of more than one
 * input. 1280 -> 1000 on two threads, a 64 MiB read before each call, medians of 60 calls
 * interleaved (2026-12-03): N=8 0.290 ms with 8 lines, 0.339 without; at N=1, where each
 * line takes fewer FMAs and the hardware's prefetch keeps up with 8 rows' streams, 0.203
 * with against 0.190 without (2048 -> 1000: 0.228, 0.218), so one-input tiles go without. */
enum { PREFETCH_LINES = 8 };

/* Filter rows per tile by inputs per tile (B = 1 .. BMAX); R x B sums in registers: 8 x 1,
 * 4 x 2..4 of AVX-512's 32 registers, 4 x 1..2 of AVX2's 16. */
#define GEMV_BODY(R, B, VW, VEC, SETZERO, LOAD, FMADD, MASK_T, MASK, MLOAD, HSUM)            \
    VEC acc[R][B];                                                                       \
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)                                  \
        _Pragma("GCC unroll 4") for (int b = 0; b < B; b++) acc[r][b] = SETZERO();        \
    idx c = 0;                                                                           \
    for (; c + VW <= C; c += VW) {                                                       \
        if (B > 1 && (c & 15) == 0)                                         \
            _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)                          \
                _mm_prefetch((const char *)(W + r * ldw + c + 16 * PREFETCH_LINES),      \
                             _MM_HINT_T0);                                               \
        VEC xv[B];                                                                       \
        _Pragma("GCC unroll 4") for (int b = 0; b < B; b++) xv[b] = LOAD(X + b * ldx + c); \
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {                            \
            const VEC w = LOAD(W + r * ldw + c);                                         \
            _Pragma("GCC unroll 4") for (int b = 0; b < B; b++)                          \
                acc[r][b] = FMADD(w, xv[b], acc[r][b]);                                  \
        }                                                                                \
    }                                                                                    \
    if (c < C) { /* the last C % VW channels, masked */                                  \
        const MASK_T m = MASK((int)(C - c));                                             \
        VEC xv[B];                                                                       \
        _Pragma("GCC unroll 4") for (int b = 0; b < B; b++) xv[b] = MLOAD(X + b * ldx + c, m); \
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {                            \
            const VEC w = MLOAD(W + r * ldw + c, m);                                     \
            _Pragma("GCC unroll 4") for (int b = 0; b < B; b++)                          \
                acc[r][b] = FMADD(w, xv[b], acc[r][b]);                                  \
        }                                                                                \
    }                                                                                    \
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)                                  \
        _Pragma("GCC unroll 4") for (int b = 0; b < B; b++)                              \
            Y[b * ldy + r] = HSUM(acc[r][b]) + (bias ? bias[r] : 0.0f);

/* Y[b, r] = bias[r] + sum_c X[b, c] W[r, c] for r < R, b < B; rows ldx, ldw, ldy apart. */
typedef void (*gemv_t)(idx C, const float *W, idx ldw, const float *X, idx ldx, float *Y,
                       idx ldy, const float *bias);
#define GEMV_ARGS                                                                        \
    (idx C, const float *restrict W, idx ldw, const float *restrict X, idx ldx,          \
     float *restrict Y, idx ldy, const float *restrict bias)

#define T512 __attribute__((target("avx512f,fma")))
T512 static inline __mmask16 mask16(int lanes) {
    return lanes >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << lanes) - 1);
}
#define MLOAD512(p, m) _mm512_maskz_loadu_ps((m), (p))
#define DEF_GEMV512(R, B)                                                                \
    T512 static void g512_##R##_##B GEMV_ARGS {                                          \
        GEMV_BODY(R, B, 16, __m512, _mm512_setzero_ps, _mm512_loadu_ps, _mm512_fmadd_ps,  \
                  __mmask16, mask16, MLOAD512, _mm512_reduce_add_ps)                     \
    }

#define T256 __attribute__((target("avx2,fma")))
T256 static inline __m256i mask8(int lanes) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
T256 static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#define MLOAD256(p, m) _mm256_maskload_ps((p), (m))
#define DEF_GEMV256(R, B)                                                                \
    T256 static void g256_##R##_##B GEMV_ARGS {                                          \
        GEMV_BODY(R, B, 8, __m256, _mm256_setzero_ps, _mm256_loadu_ps, _mm256_fmadd_ps,   \
                  __m256i, mask8, MLOAD256, hsum256)                                     \
    }

DEF_GEMV512(8, 1) DEF_GEMV512(4, 2) DEF_GEMV512(4, 3) DEF_GEMV512(4, 4)
DEF_GEMV512(1, 1) DEF_GEMV512(1, 2) DEF_GEMV512(1, 3) DEF_GEMV512(1, 4)
DEF_GEMV256(4, 1) DEF_GEMV256(4, 2) DEF_GEMV256(1, 1) DEF_GEMV256(1, 2)

/* An instruction set's tiles: by[b] takes rows[b] filters and b inputs, one[b] one filter. */
typedef struct {
    int bmax, rows[5];
    gemv_t by[5], one[5];
} gemv_set;

static const gemv_set GEMV512 = {4, {0, 8, 4, 4, 4},
                                 {0, g512_8_1, g512_4_2, g512_4_3, g512_4_4},
                                 {0, g512_1_1, g512_1_2, g512_1_3, g512_1_4}};
static const gemv_set GEMV256 = {2, {0, 4, 4}, {0, g256_4_1, g256_4_2}, {0, g256_1_1, g256_1_2}};

/* Filters per block: a block's rows are read from memory by the first chunk of inputs and
 * from L1 by the others (8 x 1280 floats: 40 KiB). */
enum { GEMV_BLOCK = 8 };

void pw_linear_part(void *arg, int part, int parts) {
    const linear_job *j = arg;
    const gemv_set *s = j->isa->vw == 16 ? &GEMV512 : &GEMV256;
    /* whole blocks per part, so that no two threads share a line of W's rows' ends */
    const idx blocks = (j->F + GEMV_BLOCK - 1) / GEMV_BLOCK;
    const idx per = (blocks + parts - 1) / parts;
    const idx f0 = min_i(j->F, part * per * GEMV_BLOCK), f1 = min_i(j->F, f0 + per * GEMV_BLOCK);
    for (idx f = f0; f < f1; f += GEMV_BLOCK) {
        const idx fe = min_i(f1, f + GEMV_BLOCK);
        for (idx n = 0; n < j->N; n += s->bmax) {
            const int b = (int)min_i(j->N - n, s->bmax), R = s->rows[b];
            const float *X = j->X + n * j->ldx;
            float *Y = j->Y + n * j->ldy;
            idx r = f;
            for (; r + R <= fe; r += R)
                s->by[b](j->C, j->W + r * j->ldw, j->ldw, X, j->ldx, Y + r, j->ldy,
                         j->bias ? j->bias + r : NULL);
            for (; r < fe; r++)
                s->one[b](j->C, j->W + r * j->ldw, j->ldw, X, j->ldx, Y + r, j->ldy,
                          j->bias ? j->bias + r : NULL);
        }
    }
}

/* The pool: channels [c0, c1) of image X (pixels (i, j) at i * sh + j * sw), summed in
 * float64 over H x W pixels, times `scale` into Y. Blocks of 4 vectors of floats, each two
 * vectors of doubles. */
#define MEAN_BODY(VW, DVEC, DZERO, CVT_LO, CVT_HI, DADD, DMUL, DSET1, DSTORE, LOADF, MASK)   \
    for (idx c = c0; c < c1; c += 4 * VW) {                                              \
        DVEC acc[8];                                                                     \
        _Pragma("GCC unroll 8") for (int v = 0; v < 8; v++) acc[v] = DZERO();            \
        const int left = (int)min_i(c1 - c, 4 * VW);                                     \
        for (idx i = 0; i < H; i++)                                                      \
            for (idx jx = 0; jx < Wd; jx++) {                                            \
                const float *p = X + i * sh + jx * sw + c;                               \
                _Pragma("GCC unroll 4") for (int v = 0; v < 4; v++) {                    \
                    if (v * VW >= left) break;                                           \
                    const __typeof__(LOADF(p, left)) f = LOADF(p + v * VW, left - v * VW); \
                    acc[2 * v] = DADD(acc[2 * v], CVT_LO(f));                            \
                    acc[2 * v + 1] = DADD(acc[2 * v + 1], CVT_HI(f));                    \
                }                                                                        \
            }                                                                            \
        double out[4 * VW];                                                              \
        _Pragma("GCC unroll 8") for (int v = 0; v < 8; v++)                              \
            DSTORE(out + v * (VW / 2), DMUL(acc[v], DSET1(scale)));                      \
        for (int k = 0; k < left; k++) Y[c + k] = (float)out[k];                         \
    }

#define MEAN_ARGS                                                                        \
    (const float *restrict X, idx H, idx Wd, idx sh, idx sw, idx c0, idx c1, double scale,  \
     float *restrict Y)

T512 static inline __m512 load512(const float *p, int lanes) {
    return lanes >= 16 ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(mask16(lanes), p);
}
#define CVT_LO512(f) _mm512_cvtps_pd(_mm512_castps512_ps256(f))
#define CVT_HI512(f) _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(f), 1)))
T512 static void mean512 MEAN_ARGS {
    MEAN_BODY(16, __m512d, _mm512_setzero_pd, CVT_LO512, CVT_HI512, _mm512_add_pd, _mm512_mul_pd,
              _mm512_set1_pd, _mm512_storeu_pd, load512, mask16)
}

T256 static inline __m256 load256(const float *p, int lanes) {
    return lanes >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mask8(lanes));
}
#define CVT_LO256(f) _mm256_cvtps_pd(_mm256_castps256_ps128(f))
#define CVT_HI256(f) _mm256_cvtps_pd(_mm256_extractf128_ps(f, 1))
T256 static void mean256 MEAN_ARGS {
    MEAN_BODY(8, __m256d, _mm256_setzero_pd, CVT_LO256, CVT_HI256, _mm256_add_pd, _mm256_mul_pd,
              _mm256_set1_pd, _mm256_storeu_pd, load256, mask8)
}

/* Channels per unit of work: a unit is (image, block of MEAN_UNIT channels). */
enum { MEAN_UNIT = 64 };

void pw_mean_part(void *arg, int part, int parts) {
    const mean_job *j = arg;
    const idx per_image = (j->C + MEAN_UNIT - 1) / MEAN_UNIT, units = j->N * per_image;
    const idx per = (units + parts - 1) / parts;
    const idx u0 = min_i(units, part * per), u1 = min_i(units, u0 + per);
    const double scale = 1.0 / (double)(j->H * j->W);
    for (idx u = u0; u < u1; u++) {
        const idx n = u / per_image, c0 = (u % per_image) * MEAN_UNIT;
        const idx c1 = min_i(j->C, c0 + MEAN_UNIT);
        const float *X = j->X + n * j->sn;
        float *Y = j->Y + n * j->ldy;
        if (j->isa->vw == 16)
            mean512(X, j->H, j->W, j->sh, j->sw, c0, c1, scale, Y);
        else
            mean256(X, j->H, j->W, j->sh, j->sw, c0, c1, scale, Y);
    }
}
#endif
