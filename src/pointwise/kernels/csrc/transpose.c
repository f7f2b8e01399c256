/* Transposed copies, for packing weights from the (F, C) storage torch keeps a conv's weight
 * in into the (C, F) panels the drivers read: each call packs from the weight's own memory,
 * so no copy of it outlives the call.
 *
 * 8 x 8 blocks transposed in AVX registers (every CPU the kernels run on has AVX2), in tiles
 * of 64 x 64 so that a tile's rows of the source and of the destination (16 KiB each) stay in
 * L1. Scalar copies of 1x1 2048->512 weights (1M floats, N=1) took 1.0 ms of a 1.6 ms call;
 * see taps.c for what it costs now. */
#include "pointwise.h"

#ifdef PW_X86
#include <immintrin.h>

__attribute__((target("avx2"))) static void block8(const float *s, idx lds, float *d, idx ldd) {
    __m256 r0 = _mm256_loadu_ps(s), r1 = _mm256_loadu_ps(s + lds);
    __m256 r2 = _mm256_loadu_ps(s + 2 * lds), r3 = _mm256_loadu_ps(s + 3 * lds);
    __m256 r4 = _mm256_loadu_ps(s + 4 * lds), r5 = _mm256_loadu_ps(s + 5 * lds);
    __m256 r6 = _mm256_loadu_ps(s + 6 * lds), r7 = _mm256_loadu_ps(s + 7 * lds);
    /* pairs of rows interleaved, then pairs of pairs, then the 128-bit halves swapped */
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_storeu_ps(d, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_storeu_ps(d + ldd, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_storeu_ps(d + 2 * ldd, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_storeu_ps(d + 3 * ldd, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_storeu_ps(d + 4 * ldd, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_storeu_ps(d + 5 * ldd, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_storeu_ps(d + 6 * ldd, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_storeu_ps(d + 7 * ldd, _mm256_permute2f128_ps(u3, u7, 0x31));
}

/* d[c * ldd + r] = s[r * lds + c] for r < rows, c < cols. */
void pw_transpose(const float *s, idx lds, idx rows, idx cols, float *d, idx ldd) {
    enum { T = 64 };
    for (idx c0 = 0; c0 < cols; c0 += T) {
        const idx c1 = min_i(cols, c0 + T);
        for (idx r0 = 0; r0 < rows; r0 += T) {
            const idx r1 = min_i(rows, r0 + T);
            idx r = r0;
            for (; r + 8 <= r1; r += 8) {
                idx c = c0;
                for (; c + 8 <= c1; c += 8) block8(s + r * lds + c, lds, d + c * ldd + r, ldd);
                for (; c < c1; c++)
                    for (idx i = r; i < r + 8; i++) d[c * ldd + i] = s[i * lds + c];
            }
            for (; r < r1; r++)
                for (idx c = c0; c < c1; c++) d[c * ldd + r] = s[r * lds + c];
        }
    }
}
#endif
