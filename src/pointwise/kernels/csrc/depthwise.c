/* The depthwise 3x3 driver: each channel filtered by its own 3x3 kernel, padding 1, stride
 * 1 or 2, channels-last, with the bias and activation applied before the store.
 *
 *   Y[n, y, x, c] = act( bias[c] + sum over (i, j) of X[n, y·s − 1 + i, x·s − 1 + j, c]
 *                                                    · w[i, j, c] )
 *
 * There is no sum over channels, so no GEMM: a depthwise conv moves as many bytes as it
 * does multiply-adds per pixel (9), and alone it is bound by memory. The row function keeps
 * a channel block's nine weights in registers and runs PX output pixels against them, each
 * tap's input read through a pointer (the pixel, or a row of zeros in the padding), so the
 * borders cost nothing but the pointers and there is no padded copy. Its rows of input are
 * three pointers, so the fused blocks (blocks.c) run it on rows they have just computed
 * into a per-thread buffer, as the whole-tensor driver here runs it on the input in place.
 */
#include "pointwise.h"

#ifdef PW_X86
#include <immintrin.h>

/* Output pixels per step inside a row: their 9 weights are loaded once, and at stride 1
 * each input pixel once for the (up to 3) outputs that read it. */
enum { PX = 4 };

/* One output row: y[x, c] for x < Wo, from the input rows rows[0..2] (NULL: padding), each
 * W pixels sw floats apart, w (3, 3, C). zero: C zeros. Groups of PX pixels whose taps all
 * lie inside the row (DW_INNER) read each input pixel once for the group's outputs it meets
 * (6 loads per row of taps at stride 1, not 12); the pixels at the borders go one at a time
 * through a table of tap pointers (DW_EDGE). */
#define DW_ROW_BODY                                                                          \
    const VEC vzero = SETZERO(), six = SET1(6.0f);                                           \
    for (idx x0 = 0; x0 < Wo;) {                                                             \
        const int inner = x0 >= 1 && x0 + PX <= Wo && (x0 + PX - 1) * s + 1 < W;            \
        if (inner && s == 1) DW_INNER(1)                                                  \
        else if (inner) DW_INNER(2)                                                       \
        else DW_EDGE                                                                  \
    }

/* The activation, and the store of acc to o (masked unless full). */
#define DW_STORE(o, acc)                                                                     \
    {                                                                                        \
        VEC a_ = acc;                                                                        \
        if (act != ACT_NONE) a_ = MAX(vzero, a_);                                            \
        if (act == ACT_RELU6) a_ = MIN(six, a_);                                             \
        if (full) STORE(o, a_); else MSTORE(o, m, a_);                                       \
    }

/* The channel block's weights and bias (masked unless full). */
#define DW_WEIGHTS                                                                           \
    const int full = C - c >= VW;                                                            \
    const MASK_T m = MASK((int)min_i(C - c, VW));                                            \
    VEC wv[9], b0 = vzero;                                                                   \
    _Pragma("GCC unroll 9") for (int t = 0; t < 9; t++)                                      \
        wv[t] = full ? LOAD(w + t * C + c) : MLOAD(w + t * C + c, m);                        \
    if (bias) b0 = full ? LOAD(bias + c) : MLOAD(bias + c, m);

/* PX pixels from x0, stride S, every tap inside the row: the (PX - 1)·S + 3 input pixels of
 * each row of taps loaded once. */
#define DW_INNER(S)                                                                          \
    {                                                                                        \
        enum { NC = (PX - 1) * S + 3 };                                                      \
        for (idx c = 0; c < C; c += VW) {                                                    \
            DW_WEIGHTS                                                                       \
            VEC acc[PX];                                                                     \
            _Pragma("GCC unroll 4") for (int q = 0; q < PX; q++) acc[q] = b0;                \
            for (int i = 0; i < 3; i++) {                                                    \
                if (rows[i] == NULL) continue;                                               \
                const float *base = rows[i] + (x0 * S - 1) * sw + c;                         \
                VEC col[NC];                                                                 \
                _Pragma("GCC unroll 12") for (int k = 0; k < NC; k++)                        \
                    col[k] = full ? LOAD(base + k * sw) : MLOAD(base + k * sw, m);           \
                _Pragma("GCC unroll 4") for (int q = 0; q < PX; q++)                         \
                    _Pragma("GCC unroll 3") for (int j = 0; j < 3; j++)                      \
                        acc[q] = FMADD(col[q * S + j], wv[i * 3 + j], acc[q]);               \
            }                                                                                \
            _Pragma("GCC unroll 4") for (int q = 0; q < PX; q++)                             \
                DW_STORE(y + (x0 + q) * ldy + c, acc[q])                                     \
        }                                                                                    \
        x0 += PX;                                                                            \
    }

/* One pixel at x0, its taps through pointers: the input pixel or the row of zeros. */
#define DW_EDGE                                                                              \
    {                                                                                        \
        const float *p[9];                                                                   \
        for (int t = 0; t < 9; t++) {                                                        \
            const float *row = rows[t / 3];                                                  \
            const idx ix = x0 * s - 1 + t % 3;                                               \
            p[t] = row && ix >= 0 && ix < W ? row + ix * sw : zero;                          \
        }                                                                                    \
        for (idx c = 0; c < C; c += VW) {                                                    \
            DW_WEIGHTS                                                                       \
            VEC acc = b0;                                                                    \
            _Pragma("GCC unroll 9") for (int t = 0; t < 9; t++)                              \
                acc = FMADD(full ? LOAD(p[t] + c) : MLOAD(p[t] + c, m), wv[t], acc);         \
            DW_STORE(y + x0 * ldy + c, acc)                                                  \
        }                                                                                    \
        x0 += 1;                                                                             \
    }

#define DW_ROW_ARGS                                                                          \
    (const float *const *rows, idx W, idx sw, idx C, idx Wo, int s, const float *restrict w,  \
     const float *restrict bias, float *restrict y, idx ldy, int act, const float *zero)

/* The body's vector operations, for each instruction set: masks are bit masks for AVX-512,
 * vectors of all-ones lanes for AVX2. */
#define T512 __attribute__((target("avx512f,fma")))
T512 static inline __mmask16 dmask16(int lanes) { return (__mmask16)((1u << lanes) - 1); }
#define VW 16
#define VEC __m512
#define MASK_T __mmask16
#define MASK dmask16
#define SETZERO _mm512_setzero_ps
#define SET1 _mm512_set1_ps
#define LOAD _mm512_loadu_ps
#define STORE _mm512_storeu_ps
#define MLOAD(p, m) _mm512_maskz_loadu_ps((m), (p))
#define MSTORE(p, m, t) _mm512_mask_storeu_ps((p), (m), (t))
#define FMADD _mm512_fmadd_ps
#define MAX _mm512_max_ps
#define MIN _mm512_min_ps
T512 static void dw_row512 DW_ROW_ARGS { DW_ROW_BODY }
#undef VW
#undef VEC
#undef MASK_T
#undef MASK
#undef SETZERO
#undef SET1
#undef LOAD
#undef STORE
#undef MLOAD
#undef MSTORE
#undef FMADD
#undef MAX
#undef MIN

#define T256 __attribute__((target("avx2,fma")))
T256 static inline __m256i dmask8(int lanes) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
#define VW 8
#define VEC __m256
#define MASK_T __m256i
#define MASK dmask8
#define SETZERO _mm256_setzero_ps
#define SET1 _mm256_set1_ps
#define LOAD _mm256_loadu_ps
#define STORE _mm256_storeu_ps
#define MLOAD(p, m) _mm256_maskload_ps((p), (m))
#define MSTORE(p, m, t) _mm256_maskstore_ps((p), (m), (t))
#define FMADD _mm256_fmadd_ps
#define MAX _mm256_max_ps
#define MIN _mm256_min_ps

/* AVX2 has 16 vector registers to AVX-512's 32 and its masked loads and stores are slow on
 * AMD's cores (vmaskmovps), so its row function is its own: every group of PX pixels,
 * those at the borders included, runs the inner loop, its columns in the padding taken as
 * zeros rather than read one pixel at a time through DW_EDGE's pointers (at 7x7 three of
 * every seven pixels went that way), and only a last block of fewer than 8 channels is
 * masked: the full blocks load their weights and pixels plainly. MobileNetV2's fused blocks
 * at N=8 on one Zen 3 thread, fastest call of 9 rounds, two runs, old -> new: 56x56
 * 24->144->24 7.55 -> 7.09 and 7.80 -> 6.91 ms, 112x112 16->96->24 s2 9.76 -> 9.59 and
 * 10.15 -> 9.47, 14x14 64->384->64 2.20 -> 2.17 and 2.23 -> 2.14, 7x7 160->960->160 3.30
 * -> 3.29 and 3.35 -> 3.28 (the builds alternating: OPENBLAS_NUM_THREADS=1, the block's
 * kernel call timed with time.thread_time). */
#define DW256_GROUP(S, EDGE, LD, ST)                                                         \
    {                                                                                        \
        enum { NC = (PX - 1) * S + 3 };                                                      \
        VEC wv[9], acc[PX];                                                                  \
        _Pragma("GCC unroll 9") for (int t = 0; t < 9; t++) wv[t] = LD(w + t * C + c);        \
        const VEC b0 = bias ? LD(bias + c) : vzero;                                          \
        _Pragma("GCC unroll 4") for (int q = 0; q < PX; q++) acc[q] = b0;                    \
        for (int i = 0; i < 3; i++) {                                                        \
            if (rows[i] == NULL) continue;                                                   \
            const float *base = rows[i] + (x0 * S - 1) * sw + c;                             \
            VEC col[NC];                                                                     \
            _Pragma("GCC unroll 12") for (int k = 0; k < NC; k++)                            \
                col[k] = !EDGE || (k >= klo && k < khi) ? LD(base + k * sw) : vzero;         \
            _Pragma("GCC unroll 4") for (int q = 0; q < PX; q++)                             \
                _Pragma("GCC unroll 3") for (int j = 0; j < 3; j++)                          \
                    acc[q] = FMADD(col[q * S + j], wv[i * 3 + j], acc[q]);                   \
        }                                                                                    \
        _Pragma("GCC unroll 4") for (int q = 0; q < PX; q++) {                               \
            if (EDGE && q >= np) break;                                                      \
            VEC a_ = acc[q];                                                                 \
            if (act != ACT_NONE) a_ = MAX(vzero, a_);                                        \
            if (act == ACT_RELU6) a_ = MIN(six, a_);                                         \
            ST(y + (x0 + q) * ldy + c, a_);                                                  \
        }                                                                                    \
    }
#define DW256_LD(p) LOAD(p)
#define DW256_ST(p, v) STORE(p, v)
#define DW256_MLD(p) MLOAD(p, m)
#define DW256_MST(p, v) MSTORE(p, m, v)
/* The group of PX pixels at x0 over all channels: full blocks, then the masked rest. */
#define DW256_CHANNELS(S, EDGE)                                                              \
    {                                                                                        \
        idx c = 0;                                                                           \
        for (; c + VW <= C; c += VW) DW256_GROUP(S, EDGE, DW256_LD, DW256_ST)                \
        if (c < C) {                                                                         \
            const MASK_T m = MASK((int)(C - c));                                             \
            DW256_GROUP(S, EDGE, DW256_MLD, DW256_MST)                                       \
        }                                                                                    \
    }
T256 static void dw_row256 DW_ROW_ARGS {
    (void)zero;
    const VEC vzero = SETZERO(), six = SET1(6.0f);
    for (idx x0 = 0; x0 < Wo; x0 += PX) {
        /* input columns k = 0 .. NC - 1 of the group lie at x0·s − 1 + k: those below klo
         * or from khi on are padding */
        const int np = (int)min_i(PX, Wo - x0), klo = x0 == 0;
        const idx room = W - (x0 * s - 1);
        const int khi = (int)min_i(room, (PX - 1) * s + 3);
        const int edge = klo || khi < (PX - 1) * s + 3 || np < PX;
        if (s == 1) {
            if (edge) DW256_CHANNELS(1, 1) else DW256_CHANNELS(1, 0)
        } else {
            if (edge) DW256_CHANNELS(2, 1) else DW256_CHANNELS(2, 0)
        }
    }
}

dw_row_t pw_dw_row(const isa_t *isa) { return isa->vw == 16 ? dw_row512 : dw_row256; }

/* The rows of input that output row oy of image n reads: NULL where they are padding. */
static void input_rows(const dw_job *j, idx n, idx oy, const float *rows[3]) {
    for (int i = 0; i < 3; i++) {
        const idx iy = oy * j->s - 1 + i;
        rows[i] = iy >= 0 && iy < j->H ? j->X + n * j->sn + iy * j->sh : NULL;
    }
}

/* Parts split the N·Ho output rows evenly. */
void pw_dw_part(void *arg, int part, int parts) {
    dw_job *j = arg;
    const idx R = j->N * j->Ho, r0 = R * part / parts, r1 = R * (part + 1) / parts;
    if (r0 >= r1) return;
    float *zero = pw_scratch(0, (size_t)j->C);
    if (zero == NULL) {
        atomic_store(&j->failed, 1);
        return;
    }
    for (idx c = 0; c < j->C; c++) zero[c] = 0.0f;
    const dw_row_t row = pw_dw_row(j->isa);
    for (idx r = r0; r < r1; r++) {
        const float *rows[3];
        input_rows(j, r / j->Ho, r % j->Ho, rows);
        row(rows, j->W, j->sw, j->C, j->Wo, j->s, j->Wt, j->bias, j->Y + r * j->Wo * j->ldy,
            j->ldy, j->act, zero);
    }
}
#endif
