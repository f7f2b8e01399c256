/* The mean and scatter of pixel vectors, in float64: mu = 1^T X / M and
 * S = (X - mu)^T (X - mu) for the M rows of X (M x C, float32 or float64, any strides).
 *
 * S is symmetric, so only its lower triangle is computed: C(C + 1)/2 of the C^2 dot
 * products, half of a GEMM's work. Each thread takes a share of the rows and, a block of
 * them at a time, packs the block once, converted to float64 less the shift (the column
 * sums t come with it), into panels of 8 channels: panel q holds channels 8q .. 8q + 7 of
 * every row of the block, a 64-byte line per row (channels past C are zero). A tile of the
 * triangle, 8 channels (one panel) by 8 NP channels (NP panels at or left of it), is then
 * held in registers over the whole block: per row, one broadcast of each of the 8 row
 * channels and one vector load per column panel, 8 NP fused multiply-adds in float64. Every
 * stream a tile reads is one line per row, in order.
 *
 * Converting in the packing pass rather than in the micro-kernel: a pixel's channel is read
 * by about C/8 tiles, so converting it there would cost C/8 conversions where packing costs
 * one. The products of float32 values are exact in float64; what rounds is the sum, as in
 * a float64 GEMM.
 *
 * Three paths, chosen by the kernels' instruction set: AVX-512 (8 x 24 tiles, 24 zmm
 * accumulators), AVX2 (4 x 8 tiles, 8 ymm) and portable C (no intrinsics; also the reference
 * the tests hold the other two to). The threads' sums are added in row order by the caller,
 * so a result does not depend on timing.
 */
#include "pointwise.h"

#ifdef PW_X86
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

enum { PW = 8 };  /* channels per panel: one 64-byte line of doubles */

static idx panels(idx C) { return (C + PW - 1) / PW; }

/* Pack rows [0, n) of X (rows sm, channels sc apart, in elements) into P (panels of rows of
 * 8, ps doubles apart), less the shift, adding each channel's sum to t. Portable: any
 * strides, either dtype. With the rows contiguous (sm == 1, channels-first storage) the row
 * loop reads one stream per channel. */
#define PACK_ANY(NAME, T)                                                                    \
    static void NAME(const T *X, idx sm, idx sc, idx n, idx C, const double *s, double *P,   \
                     idx ps, double *t) {                                                    \
        for (idx q = 0; q < panels(C); q++) {                                                \
            double *p = P + q * ps;                                                          \
            for (int c = 0; c < PW; c++) {                                                   \
                const idx ch = q * PW + c;                                                   \
                double sum = 0.0;                                                            \
                if (ch < C) {                                                                \
                    const T *x = X + ch * sc;                                                \
                    for (idx m = 0; m < n; m++) {                                            \
                        const double d = (double)x[m * sm] - s[ch];                          \
                        p[m * PW + c] = d;                                                   \
                        sum += d;                                                            \
                    }                                                                        \
                    t[ch] += sum;                                                            \
                } else {                                                                     \
                    for (idx m = 0; m < n; m++) p[m * PW + c] = 0.0;                         \
                }                                                                            \
            }                                                                                \
        }                                                                                    \
    }
PACK_ANY(pack_f32, float)
PACK_ANY(pack_f64, double)

/* The same for unit channel stride, a panel's row per vector: masked loads past C. */
__attribute__((target("avx512f"))) static void pack512(const void *X, int f64, idx sm, idx n,
                                                      idx C, const double *s, double *P,
                                                      idx ps, double *t) {
    for (idx q = 0; q < panels(C); q++) {
        const __mmask8 k = (__mmask8)(C - q * PW >= PW ? 0xFF : (1u << (C - q * PW)) - 1);
        const __m512d sv = _mm512_maskz_loadu_pd(k, s + q * PW);
        __m512d sum = _mm512_setzero_pd();
        double *p = P + q * ps;
        if (f64) {
            const double *x = (const double *)X + q * PW;
            for (idx m = 0; m < n; m++) {
                const __m512d d = _mm512_sub_pd(_mm512_maskz_loadu_pd(k, x + m * sm), sv);
                _mm512_store_pd(p + m * PW, d);
                sum = _mm512_add_pd(sum, d);
            }
        } else {
            const float *x = (const float *)X + q * PW;
            for (idx m = 0; m < n; m++) {
                const __m256 v = _mm512_castps512_ps256(_mm512_maskz_loadu_ps(k, x + m * sm));
                const __m512d d = _mm512_sub_pd(_mm512_cvtps_pd(v), sv);
                _mm512_store_pd(p + m * PW, d);
                sum = _mm512_add_pd(sum, d);
            }
        }
        _mm512_mask_storeu_pd(t + q * PW, k, _mm512_add_pd(_mm512_maskz_loadu_pd(k, t + q * PW), sum));
    }
}

/* The same for float32 channels-first storage (rows contiguous, sm == 1): 8 rows of each of
 * a panel's 8 channels per step, converted, then transposed in registers into 8 panel rows.
 * The rows past the last multiple of 8 go the portable way. */
__attribute__((target("avx512f"))) static void pack512_cf(const float *X, idx sc, idx n, idx C,
                                                         const double *s, double *P, idx ps,
                                                         double *t) {
    const idx n8 = n / 8 * 8;
    for (idx q = 0; q < panels(C); q++) {
        const int live = (int)min_i(PW, C - q * PW);
        __m512d sv[PW], sum[PW], r[PW];
        for (int c = 0; c < PW; c++) {
            sv[c] = _mm512_set1_pd(c < live ? s[q * PW + c] : 0.0);
            sum[c] = _mm512_setzero_pd();
        }
        double *p = P + q * ps;
        for (idx m = 0; m < n8; m += 8) {
            _Pragma("GCC unroll 8") for (int c = 0; c < PW; c++) {
                r[c] = c < live ? _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(X + (q * PW + c) * sc + m)), sv[c])
                                : _mm512_setzero_pd();
                sum[c] = _mm512_add_pd(sum[c], r[c]);
            }
            /* r[c] holds channel c of rows m .. m + 7; row i is column i of r */
            __m512d u[PW], v[PW];
            for (int c = 0; c < PW; c += 2) {
                u[c] = _mm512_unpacklo_pd(r[c], r[c + 1]);      /* (c, c+1) at rows 0 2 4 6 */
                u[c + 1] = _mm512_unpackhi_pd(r[c], r[c + 1]);  /* ... at rows 1 3 5 7 */
            }
            for (int h = 0; h < 2; h++) {  /* channels 0-3, then 4-7 */
                v[4 * h + 0] = _mm512_shuffle_f64x2(u[4 * h], u[4 * h + 2], 0x88);      /* rows 0 4 */
                v[4 * h + 1] = _mm512_shuffle_f64x2(u[4 * h], u[4 * h + 2], 0xDD);      /* rows 2 6 */
                v[4 * h + 2] = _mm512_shuffle_f64x2(u[4 * h + 1], u[4 * h + 3], 0x88);  /* rows 1 5 */
                v[4 * h + 3] = _mm512_shuffle_f64x2(u[4 * h + 1], u[4 * h + 3], 0xDD);  /* rows 3 7 */
            }
            static const int row_lo[4] = {0, 2, 1, 3};
            for (int k = 0; k < 4; k++) {
                _mm512_store_pd(p + (m + row_lo[k]) * PW, _mm512_shuffle_f64x2(v[k], v[4 + k], 0x88));
                _mm512_store_pd(p + (m + row_lo[k] + 4) * PW, _mm512_shuffle_f64x2(v[k], v[4 + k], 0xDD));
            }
        }
        for (int c = 0; c < live; c++) t[q * PW + c] += _mm512_reduce_add_pd(sum[c]);
    }
    if (n8 < n) pack_f32(X + n8, 1, sc, n - n8, C, s, P + n8 * PW, ps, t);
}

/* S[r, 8 v + c] += sum over the n rows of A[r] * B_v[c], r < MR, v < NP: A points at a row
 * panel (offset to the tile's first row in it), B at the first of NP column panels, panels
 * ps doubles apart; S's rows lds apart. */
#define TILE(NAME, TARGET, MR, NP, VW, VEC, ZERO, LOAD, BCAST, FMA, ADD, STOREU, LOADU)     \
    TARGET static void NAME(idx n, const double *A, const double *B, idx ps, double *S,     \
                            idx lds) {                                                      \
        VEC acc[MR][NP * PW / VW];                                                          \
        _Pragma("GCC unroll 8") for (int r = 0; r < MR; r++)                                \
            _Pragma("GCC unroll 8") for (int v = 0; v < NP * PW / VW; v++) acc[r][v] = ZERO(); \
        for (idx m = 0; m < n; m++) {                                                       \
            VEC b[NP * PW / VW];                                                            \
            _Pragma("GCC unroll 8") for (int v = 0; v < NP * PW / VW; v++)                  \
                b[v] = LOAD(B + (v * VW / PW) * ps + m * PW + (v * VW) % PW);               \
            _Pragma("GCC unroll 8") for (int r = 0; r < MR; r++) {                          \
                const VEC a = BCAST(A + m * PW + r);                                        \
                _Pragma("GCC unroll 8") for (int v = 0; v < NP * PW / VW; v++)              \
                    acc[r][v] = FMA(a, b[v], acc[r][v]);                                    \
            }                                                                               \
        }                                                                                   \
        _Pragma("GCC unroll 8") for (int r = 0; r < MR; r++)                                \
            _Pragma("GCC unroll 8") for (int v = 0; v < NP * PW / VW; v++)                  \
                STOREU(S + r * lds + v * VW, ADD(LOADU(S + r * lds + v * VW), acc[r][v]));  \
    }

#define T512 __attribute__((target("avx512f")))
#define BC512(p) _mm512_set1_pd(*(p))
#define Z512 _mm512_setzero_pd
TILE(tile512_1, T512, 8, 1, 8, __m512d, Z512, _mm512_load_pd, BC512, _mm512_fmadd_pd,
     _mm512_add_pd, _mm512_storeu_pd, _mm512_loadu_pd)
TILE(tile512_2, T512, 8, 2, 8, __m512d, Z512, _mm512_load_pd, BC512, _mm512_fmadd_pd,
     _mm512_add_pd, _mm512_storeu_pd, _mm512_loadu_pd)
TILE(tile512_3, T512, 8, 3, 8, __m512d, Z512, _mm512_load_pd, BC512, _mm512_fmadd_pd,
     _mm512_add_pd, _mm512_storeu_pd, _mm512_loadu_pd)

#define T256 __attribute__((target("avx2,fma")))
#define BC256(p) _mm256_broadcast_sd(p)
TILE(tile256, T256, 4, 1, 4, __m256d, _mm256_setzero_pd, _mm256_load_pd, BC256, _mm256_fmadd_pd,
     _mm256_add_pd, _mm256_storeu_pd, _mm256_loadu_pd)

/* Portable: the same tile (8 x 8) in plain C, which any compiler vectorizes as it can. */
static void tile_c(idx n, const double *A, const double *B, idx ps, double *S, idx lds) {
    (void)ps;
    double acc[PW][PW] = {{0.0}};
    for (idx m = 0; m < n; m++)
        for (int r = 0; r < PW; r++)
            for (int c = 0; c < PW; c++) acc[r][c] += A[m * PW + r] * B[m * PW + c];
    for (int r = 0; r < PW; r++)
        for (int c = 0; c < PW; c++) S[r * lds + c] += acc[r][c];
}

/* The lower triangle of a packed block's scatter into S (Q*8 x Q*8, rows lds apart): the
 * tiles of row panel i cover column panels 0 .. i (the diagonal panel whole). */
static void triangle(int path, idx n, idx Q, const double *P, double *S, idx lds) {
    const idx ps = n * PW;
    for (idx i = 0; i < Q; i++) {
        const double *A = P + i * ps;
        double *Si = S + i * PW * lds;
        for (idx j = 0; j <= i;) {
            const idx np = min_i(path == PW_MOMENTS_AVX512 ? 3 : 1, i + 1 - j);
            const double *B = P + j * ps;
            double *St = Si + j * PW;
            if (path == PW_MOMENTS_AVX512) {
                if (np == 3) tile512_3(n, A, B, ps, St, lds);
                else if (np == 2) tile512_2(n, A, B, ps, St, lds);
                else tile512_1(n, A, B, ps, St, lds);
            } else if (path == PW_MOMENTS_AVX2) {
                tile256(n, A, B, ps, St, lds);  /* rows 0-3 of the panel, then 4-7 */
                tile256(n, A + 4, B, ps, St + 4 * lds, lds);
            } else {
                tile_c(n, A, B, ps, St, lds);
            }
            j += np;
        }
    }
}

/* Pack rows [b, b + n) of the job's X, run by run (an image, or a row of one). */
static void pack(const moments_job *j, idx b, idx n, const double *shift, double *P, double *t) {
    const size_t size = j->f64 ? sizeof(double) : sizeof(float);
    const idx ps = n * PW;
    for (idx r = 0; r < n;) {
        const idx m = b + r, run = m / j->P, i = m % j->P, len = min_i(n - r, j->P - i);
        const idx at = run / j->H * j->sn + run % j->H * j->sh + i * j->sm;
        const void *x = (const char *)j->X + (size_t)at * size;
        double *p = P + r * PW;
        if (j->path == PW_MOMENTS_AVX512 && j->sc == 1)
            pack512(x, j->f64, j->sm, len, j->C, shift, p, ps, t);
        else if (j->path == PW_MOMENTS_AVX512 && j->sm == 1 && !j->f64)
            pack512_cf(x, j->sc, len, j->C, shift, p, ps, t);
        else if (j->f64)
            pack_f64(x, j->sm, j->sc, len, j->C, shift, p, ps, t);
        else
            pack_f32(x, j->sm, j->sc, len, j->C, shift, p, ps, t);
        r += len;
    }
}

/* Subtract the shift from a block packed without one, summing what is left into t. */
static void recentre(double *P, idx n, idx Q, const double *s, double *t) {
    for (idx q = 0; q < Q; q++)
        for (idx m = 0; m < n; m++)
            for (int c = 0; c < PW; c++) {
                const double d = P[(q * n + m) * PW + c] - s[q * PW + c];
                P[(q * n + m) * PW + c] = d;
                t[q * PW + c] += d;
            }
}

/* Merge a set of n vectors, mean `mean_b` and lower-triangle scatter S_b, into a set of
 * `count` (Chan, Golub and LeVeque, 1979): S += S_b + delta delta^T count n / (count + n). */
static void merge(idx D, idx count, double *mean, double *S, idx n, const double *mean_b,
                  const double *S_b) {
    const double f = (double)count * (double)n / (double)(count + n), g = (double)n / (double)(count + n);
    for (idx r = 0; r < D; r++) {
        const double dr = mean_b[r] - mean[r];
        for (idx c = 0; c <= r; c++) S[r * D + c] += S_b[r * D + c] + f * dr * (mean_b[c] - mean[c]);
    }
    for (idx r = 0; r < D; r++) mean[r] += g * (mean_b[r] - mean[r]);
}

/* A part's doubles in the job's work: its running mean and scatter, then a segment's. */
idx pw_moments_work(idx C) {
    const idx D = panels(C) * PW;
    return 2 * D * D + 3 * D;
}

/* Part `part` of `parts`: its share of the rows, segment by segment. A segment's blocks
 * share one shift, the mean of its first block (so the cancellation in S_b - n d d^T,
 * d = mean - shift, is bounded by the drift of the mean within the segment); each segment
 * is merged into the part's running mean and scatter. */
void pw_moments_part(void *arg, int part, int parts) {
    moments_job *j = arg;
    atomic_store(&j->parts, parts);
    const idx Q = panels(j->C), D = Q * PW, mb = j->block;
    double *mean = j->work + (idx)part * pw_moments_work(j->C), *S = mean + D;
    double *Sb = S + D * D, *t = Sb + D * D, *shift = t + D;
    memset(mean, 0, sizeof(double) * (size_t)(D * D + D));
    double *P = (double *)pw_scratch(0, (size_t)(2 * mb * D));
    if (P == NULL) {
        atomic_store(&j->failed, 1);
        return;
    }
    const idx m0 = j->M * part / parts, m1 = j->M * (part + 1) / parts;
    for (idx seg = m0, count = 0; seg < m1; count += min_i(j->segment, m1 - seg), seg += j->segment) {
        const idx end = min_i(m1, seg + j->segment);
        memset(Sb, 0, sizeof(double) * (size_t)(D * D + 2 * D));  /* Sb, t, shift */
        for (idx b = seg; b < end; b += mb) {
            const idx n = min_i(mb, end - b);
            pack(j, b, n, shift, P, t);
            if (b == seg) {  /* packed less nothing: the shift is this block's mean */
                for (idx c = 0; c < D; c++) {
                    shift[c] = t[c] / (double)n;
                    t[c] = 0.0;
                }
                recentre(P, n, Q, shift, t);
            }
            triangle(j->path, n, Q, P, Sb, D);
        }
        const idx n = end - seg;
        for (idx c = 0; c < D; c++) t[c] = shift[c] + t[c] / (double)n;  /* the mean */
        for (idx r = 0; r < D; r++)
            for (idx c = 0; c <= r; c++) Sb[r * D + c] -= (double)n * (t[r] - shift[r]) * (t[c] - shift[c]);
        merge(D, count, mean, S, n, t, Sb);
    }
}

/* Merge the parts, in order, into mean (C) and S (C x C, rows lds apart, lower triangle
 * mirrored). */
void pw_moments_reduce(moments_job *j, int parts, double *mean, double *S, idx lds) {
    const idx D = panels(j->C) * PW, C = j->C;
    double *m0 = j->work, *S0 = m0 + D;
    for (int p = 1; p < parts; p++) {
        const double *mp = j->work + (idx)p * pw_moments_work(C);
        const idx before = j->M * p / parts, n = j->M * (p + 1) / parts - before;
        if (n > 0) merge(D, before, m0, S0, n, mp, mp + D);
    }
    for (idx r = 0; r < C; r++) {
        mean[r] = m0[r];
        for (idx c = 0; c <= r; c++) S[r * lds + c] = S[c * lds + r] = S0[r * D + c];
    }
}
#endif
