/* The channels-first driver: Y[n][:, p] = act(W @ X[n][:, p] + bias), image by image, the
 * pixels of X in panels of NR columns (read in place when the panel is small, else packed),
 * W's rows read in place. */
#include "pointwise.h"

#ifdef PW_X86
#include <immintrin.h>
#include <string.h>

/* Images of fewer panels than this share panels (see cols_driver): at 14x14 with 48-wide
 * panels, sharing beat a 4-wide last panel per image by 4-10% (384->64, 480->16..64,
 * 512->24..112, N=8, A/B in both orders); at 4 the rule had cut those images. */
enum { SPAN_PANELS = 8 };
/* The cols driver reads a full-width panel of X in place, unpacked, up to this size: at few
 * channels the copy cost as much as the GEMM. A/B in one process, N=8, bias+ReLU: 1.1-1.4x
 * at 112x112 32->16, 1.2x at 56x56 144->24 and 28x28 192->16 (a 36 KiB panel, past L1 but
 * still faster from L2), no change elsewhere. */
#ifndef IN_PLACE_B_BYTES
#define IN_PLACE_B_BYTES (48 * 1024)
#endif

/* Channels-first: for the flattened columns q in [q0, q1) of N images of P pixels each
 * (q = n * P + p), Y[n][:, p] = act(W @ X[n][:, p] + bias). Columns go in panels of NR; a
 * panel that spans two images (small images, see below) is computed into a scratch tile and
 * then copied out, the others straight into Y. */
static int cols_driver(const isa_t *isa, idx q0, idx q1, idx P, idx K, idx F, const float *W,
                       idx ldw, const float *X, idx xn, idx xc, float *Y, idx yn, idx yf,
                       const float *bias, int act) {
    const shape_t *s = pw_cols_shape(isa, F);
    const int vw = isa->vw, NR = s->nv * vw;
    const idx kcb = min_i(K, KC_COLS);
    float *Bp = pw_scratch(0, (size_t)(kcb * NR));
    float *tile = pw_scratch(1, (size_t)(F * NR));
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
            pw_tile_rows(s->by_nv[nv], s->tail[nv], s->mr, 0, F, kc, W + pc, ldw, B, ldb, C, ldc,
                         nr, pc == 0, pc + kc >= K, NULL, bias, NULL, 0, act, 1);
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

void pw_cols_part(void *arg, int part, int parts) {
    cols_job *j = arg;
    const idx Q = j->N * j->P;
    /* whole images per part when they divide evenly, else columns in whole panels */
    const idx unit = j->N % parts == 0 ? j->P : pw_cols_shape(j->isa, j->F)->nv * j->isa->vw;
    const idx units = (Q + unit - 1) / unit;
    const idx q0 = min_i(Q, units * part / parts * unit), q1 = min_i(Q, units * (part + 1) / parts * unit);
    if (q0 < q1 && cols_driver(j->isa, q0, q1, j->P, j->K, j->F, j->W, j->ldw, j->X, j->xn, j->xc, j->Y,
                               j->yn, j->yf, j->bias, j->act) != 0)
        atomic_store(&j->failed, 1);
}
#endif
