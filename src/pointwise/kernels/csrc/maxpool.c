/* Max pooling of a channels-last input (ResNet's and GoogLeNet's after their stems):
 *
 *   Y[n, y, x, c] = max over (i, j) of X[n, y·sy − py + i, x·sx − px + j, c]
 *
 * over the window's pixels inside the image (the padding never wins, as in torch). Each
 * output pixel's channels are a few vectors that stay in registers across the window, so
 * the input is read once per window that meets it and the output written once. ResNet-50's
 * 112x112x64 3x3/2, 2 threads: torch's channels_last max_pool2d 246 us at N=1, 3.1 ms at
 * N=8; this kernel 106 us and 1.6 ms (the module's call, interleaved). At N=1 it moves
 * 3.2 MB in and 0.8 MB out; alone, one thread took 76 us and two 59 (the input from L3).
 * NaN wins, as in torch.
 */
#include "pointwise.h"

#ifdef PW_X86
#include <immintrin.h>
#include <math.h>

/* Channels per step: NV vectors of accumulators (C = 64: 4 AVX-512 vectors). */
enum { NV = 4 };

/* Output pixels [m0, m1) (m = (n, y, x)); the window's rows [i0, i1) and columns [j0, j1)
 * clipped to the image. A NaN input is kept by the blend after the max (max keeps its
 * second operand, acc, when either is NaN). */
#define POOL_BODY(VW, VEC, LOAD, STORE, SET1, MAX, UNORD, BLEND, MASK_T, MASK, MLOAD, MSTORE)  \
    idx x = m0 % j->Wo, y = (m0 / j->Wo) % j->Ho, n = m0 / (j->Wo * j->Ho);                 \
    const idx C = j->C;                                                                      \
    for (idx m = m0; m < m1; m++) {                                                          \
        const idx iy = y * j->sy - j->py, ix = x * j->sx - j->px;                            \
        const idx i0 = iy < 0 ? -iy : 0, i1 = min_i(j->KH, j->H - iy);                       \
        const idx jj0 = ix < 0 ? -ix : 0, jj1 = min_i(j->KW, j->W - ix);                     \
        const float *img = j->X + n * j->sn + iy * j->sh + ix * j->sw;                       \
        float *out = j->Y + m * j->ldy;                                                      \
        for (idx c = 0; c < C; c += NV * VW) {                                               \
            VEC acc[NV];                                                                     \
            MASK_T mk[NV];                                                                   \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) {                           \
                acc[v] = SET1(-INFINITY);                                                    \
                mk[v] = MASK((int)(C - c - v * VW));                                         \
            }                                                                                \
            const int nv = (int)min_i(NV, (C - c + VW - 1) / VW);                            \
            const int full = C - c >= NV * VW;                                               \
            for (idx i = i0; i < i1; i++)                                                    \
                for (idx jj = jj0; jj < jj1; jj++) {                                         \
                    const float *p = img + i * j->sh + jj * j->sw + c;                       \
                    _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) {                   \
                        if (v >= nv) break;                                                  \
                        const VEC t = full ? LOAD(p + v * VW) : MLOAD(p + v * VW, mk[v]);    \
                        acc[v] = BLEND(MAX(t, acc[v]), t, UNORD(t));                         \
                    }                                                                        \
                }                                                                            \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) {                           \
                if (v >= nv) break;                                                          \
                if (full) STORE(out + c + v * VW, acc[v]);                                   \
                else MSTORE(out + c + v * VW, mk[v], acc[v]);                                \
            }                                                                                \
        }                                                                                    \
        if (++x == j->Wo) {                                                                  \
            x = 0;                                                                           \
            if (++y == j->Ho) { y = 0; n++; }                                                \
        }                                                                                    \
    }

#define T512 __attribute__((target("avx512f")))
T512 static inline __mmask16 mask512(int lanes) {
    return lanes >= 16 ? (__mmask16)0xFFFF : lanes <= 0 ? 0 : (__mmask16)((1u << lanes) - 1);
}
#define UNORD512(t) _mm512_cmp_ps_mask((t), (t), _CMP_UNORD_Q)
#define BLEND512(a, t, k) _mm512_mask_mov_ps((a), (k), (t))
#define MLOAD512(p, k) _mm512_maskz_loadu_ps((k), (p))
#define MSTORE512(p, k, t) _mm512_mask_storeu_ps((p), (k), (t))
T512 static void pool512(const pool_job *j, idx m0, idx m1) {
    POOL_BODY(16, __m512, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_set1_ps, _mm512_max_ps,
              UNORD512, BLEND512, __mmask16, mask512, MLOAD512, MSTORE512)
}

#define T256 __attribute__((target("avx2")))
T256 static inline __m256i mask256(int lanes) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
#define UNORD256(t) _mm256_cmp_ps((t), (t), _CMP_UNORD_Q)
#define BLEND256(a, t, k) _mm256_blendv_ps((a), (t), (k))
#define MLOAD256(p, k) _mm256_maskload_ps((p), (k))
#define MSTORE256(p, k, t) _mm256_maskstore_ps((p), (k), (t))
T256 static void pool256(const pool_job *j, idx m0, idx m1) {
    POOL_BODY(8, __m256, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_set1_ps, _mm256_max_ps,
              UNORD256, BLEND256, __m256i, mask256, MLOAD256, MSTORE256)
}

/* Parts take equal runs of output pixels. */
void pw_pool_part(void *arg, int part, int parts) {
    const pool_job *j = arg;
    const idx M = j->N * j->Ho * j->Wo;
    const idx m0 = M * part / parts, m1 = M * (part + 1) / parts;
    if (m0 >= m1) return;
    if (j->isa->vw == 16)
        pool512(j, m0, m1);
    else
        pool256(j, m0, m1);
}
#endif
