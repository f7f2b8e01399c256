/* The k x k driver: a convolution as the sum over its taps of 1x1 products on shifted views
 * of a channels-last input, an implicit GEMM with no im2col buffer and no padded copy.
 *
 *   Y[m, :] = act( bias + R[m, :] + sum over taps (i, j) of X[n, y·sy − py + i·dy,
 *                                                          x·sx − px + j·dx, :] @ W[i, j] )
 *
 * for the output pixels m = (n, y, x). A tile is MR output pixels (consecutive, possibly
 * spanning image rows and images) by one panel of filters; for each tap the micro-kernel
 * reads one row pointer per pixel (tile_pointers): the input pixel, or a row of zeros where
 * the tap falls in the padding. So stride, dilation and padding cost nothing but the
 * pointers, and the accumulators stay in registers across all the taps of a K block.
 *
 * With few channels (the 7x7 stem's 3) a tap's K loop would be a handful of steps, and the
 * pointers would cost as much as the arithmetic: there the KW taps of a kernel row are one
 * run of KW·C floats, contiguous in the input (dilation 1, pixels C floats apart), and only
 * runs that cross the image's left or right edge are copied, zero-padded, into a small
 * per-thread buffer. ResNet-50's stem, N=8: 137 -> 203 GFLOP/s (2 threads).
 *
 * The weights are packed into panels of the tile's width, each panel's rows in the order of
 * HWIO's (i, j, c): the micro-kernel streams a panel from L2 with one pointer. Read in place
 * instead (rows F floats apart), 7x7 512->512 ran at 178-213 against 218-221 GFLOP/s packed,
 * N=8; at N=1, 145-158 against 203. A weight packed before the call (pw_taps_pack_part) is
 * read as it is; otherwise each thread packs, from the weight's own memory, the K block of
 * the panel it is about to use into a buffer that stays in L2 (taps_driver). Packed in a
 * pass of its own before the products, the whole packed weight was written to memory and
 * read back: at N=1, 2 threads, torch's (F, C) weights, warm caches, the in-driver packing
 * took 7x7 512->2048 (1x1) from 0.88 to 0.61 ms, 7x7 512->512 (3x3) from 2.39 to 1.97 ms,
 * 14x14 256->1024 from 0.60 to 0.52 ms (a weight packed before the call: 0.48, 1.24, 0.49).
 */
#include "pointwise.h"

#ifdef PW_X86
#include <string.h>
#include <immintrin.h>
#include <stdlib.h>

/* A K block's packed panel stays in L2 (1 MiB per core on Zen 4) next to the input rows it
 * meets: taps are grouped so that a group's rows of one panel fit in B_BUDGET bytes. At 7x7
 * 512->512 a whole panel is 1.2 MB; groups of 3 taps (384 KiB) ran at 219-221 GFLOP/s. */
enum { B_BUDGET = 512 * 1024 };
/* Most taps in a K block (the pointer table is TG_MAX x 12 on the stack). */
enum { TG_MAX = 64 };
/* Slab order when all the packed panels take at most this many bytes (see taps_driver): a
 * 1x1 56x56 64->256 with a residual went from 68 to 108 GFLOP/s with it (N=8, 2 threads);
 * 768 KiB and 1 MiB changed no ResNet-50 3x3 layer by more than 1.5% (A/B). */
#ifndef SLAB_BUDGET
#define SLAB_BUDGET (512 * 1024)
#endif
/* Tiles of a slab. */
#ifndef SLAB_TILES
#define SLAB_TILES 16
#endif
/* Most pointers in the tables a slab's tiles keep for all its panels (see taps_driver):
 * 64 KiB. Zen 3, N=8, bias + ReLU, 4x3 tiles, against setting each tile's as it comes
 * (interleaved in one process, medians of 11; /work/notes/runs/taps2/ab.py): 56x56 64->64
 * 105 -> 116 GFLOP/s, 14x14 256->256 109 -> 123, 28x28 256->256 /2 111 -> 118, the others
 * within 3%; 65536 pointers (512 KiB) changed none by more than 4%. */
enum { PTR_CACHE = 8192 };
/* A thread's buffer for a whole packed panel stays between calls up to this size. */
enum { KEEP_PANEL_BYTES = 4 << 20 };
/* Runs of a kernel row replace single taps below this many channels (see above). */
enum { RUNS_MAX_C = 32 };

static int oihw(const taps_pack_job *p);
static void pack_panel(const taps_pack_job *p, idx k0, idx k1, idx jc, float *dst);
static idx block_pieces(const taps_pack_job *p, idx t0, idx t1, idx kc);
static void fetch_block(const taps_pack_job *p, idx jc, idx t0, idx c0, idx kc, idx KT,
                        idx lo, idx hi);

/* The panels of F filters: ceil(F / vw) vectors in `count` panels of at most the tile's nv,
 * the first `extra` of base + 1 vectors and the rest of base (an even shape's), or all of
 * nv but the last. A panel holds filters [jc, panel_end(jc)) and is packed at jc·K (the
 * panels before it are whole vectors). */
typedef struct { idx F, vw, base, extra, count; } panels_t;

static panels_t panels_of(const isa_t *isa, const tshape_t *s, idx F) {
    const idx vw = isa->vw, vecs = (F + vw - 1) / vw, count = (vecs + s->nv - 1) / s->nv;
    if (!s->even) return (panels_t){F, vw, s->nv, 0, count};
    return (panels_t){F, vw, vecs / count, vecs % count, count};
}

/* Where panel q starts (F for q = count). */
static idx panel_start(panels_t p, idx q) {
    return min_i(p.F, p.vw * (q * p.base + min_i(q, p.extra)));
}

/* Where the panel starting at jc ends. */
static idx panel_end(panels_t p, idx jc) {
    const idx v = jc / p.vw, big = p.extra * (p.base + 1);
    return panel_start(p, v < big ? v / (p.base + 1) + 1 : p.extra + (v - big) / p.base + 1);
}

/* The panels of a weight of p->K / p->C taps (the driver's tile's, taps_driver). */
static panels_t pack_panels(const taps_pack_job *p) {
    return panels_of(p->isa, pw_taps_shape(p->isa, p->F, p->K / p->C), p->F);
}

static int use_runs(const taps_job *j) { return j->dx == 1 && j->sw == j->C && j->C < RUNS_MAX_C; }

/* Row pointers of the output pixels [m, m + mr) (MR rows, the rest zeros) for the taps
 * [t0, t1): P[(t - t0) * MR + r]. With runs a tap is a kernel row of KT = KW·C floats; a run
 * that crosses the image's left or right edge is copied, zero-padded, into pad. Pixels of
 * one output row whose runs lie inside the image's width (all but a few at its ends) are
 * set a stretch at a time, a tap's runs sx·C floats apart: pixel by pixel, with the checks
 * of the edges, the pointers took 21% of a 3x3/2 3->32 conv's time (N=1, one thread), and
 * the conv 446-460 -> 348-359 us with stretches (A/B, thread time, one process). */
static void tile_pointers(const taps_job *j, int runs, idx m, int mr, int MR, idx t0, idx t1,
                          const float *zero, const float **P, float *pad) {
    idx x = m % j->Wo, y = (m / j->Wo) % j->Ho, n = m / (j->Wo * j->Ho);
    const idx KW = j->KW, C = j->C, KT = KW * C, step = j->sx * C;
    /* output columns [xa, xb) have their runs inside the image's width */
    const idx xa = (j->px + j->sx - 1) / j->sx;
    const idx xb = j->W + j->px >= KW ? min_i(j->Wo, (j->W + j->px - KW) / j->sx + 1) : 0;
    const idx ti0 = t0 / KW, tj0 = t0 % KW;
    for (int r = 0; r < MR;) {
        if (r >= mr) {
            for (idx t = t0; t < t1; t++) P[(t - t0) * MR + r] = zero;
            r++;
            continue;
        }
        const idx iy0 = y * j->sy - j->py, ix0 = x * j->sx - j->px;
        const float *img = j->X + n * j->sn;
        int len = 1;
        if (runs && x >= xa && x < xb) {
            len = (int)min_i(mr - r, xb - x);
            for (idx t = t0; t < t1; t++) {
                const idx iy = iy0 + t * j->dy;
                const float **p = &P[(t - t0) * MR + r];
                const float *a = iy >= 0 && iy < j->H ? img + iy * j->sh + ix0 * C : NULL;
                for (int q = 0; q < len; q++) p[q] = a ? a + q * step : zero;
            }
        } else if (runs) {  /* a run crossing an edge */
            const idx a = ix0 < 0 ? -ix0 : 0, b = ix0 + KW > j->W ? j->W - ix0 : KW;
            for (idx t = t0; t < t1; t++) {
                const idx iy = iy0 + t * j->dy;
                float *q = pad + ((t - t0) * MR + r) * KT;
                P[(t - t0) * MR + r] = iy < 0 || iy >= j->H ? zero : q;
                if (iy < 0 || iy >= j->H) continue;
                memset(q, 0, (size_t)KT * sizeof(float));
                if (b > a)
                    memcpy(q + a * C, img + iy * j->sh + (ix0 + a) * C,
                           (size_t)((b - a) * C) * sizeof(float));
            }
        } else {  /* tap t = i·KW + jt, counted from t0's (i, jt) without a division */
            const int inside = iy0 >= 0 && iy0 + (j->KH - 1) * j->dy < j->H && ix0 >= 0 &&
                               ix0 + (KW - 1) * j->dx < j->W;
            for (idx t = t0, i = ti0, jt = tj0; t < t1; t++) {
                const idx iy = iy0 + i * j->dy, ix = ix0 + jt * j->dx;
                P[(t - t0) * MR + r] = inside || (iy >= 0 && iy < j->H && ix >= 0 && ix < j->W)
                                           ? img + iy * j->sh + ix * j->sw : zero;
                if (++jt == KW) jt = 0, i++;
            }
        }
        r += len;
        if ((x += len) == j->Wo) {
            x = 0;
            if (++y == j->Ho) { y = 0; n++; }
        }
    }
}

/* Output pixels [m0, m1) by filters [f0, f1) (whole panels). */
static int taps_driver(const taps_job *j, idx m0, idx m1, idx f0, idx f1) {
    const tshape_t *s = pw_taps_shape(j->isa, j->F, j->KH * j->KW);
    const int MR = s->mr, vw = j->isa->vw, NR = s->nv * vw, runs = use_runs(j);
    const panels_t pn = panels_of(j->isa, s, j->F);
    const idx T = runs ? j->KH : j->KH * j->KW, KT = runs ? j->KW * j->C : j->C, K = T * KT;
    /* K blocks: channel blocks of CB, then tap groups of TG, even in size */
    idx CB = KT;
    while ((idx)sizeof(float) * CB * NR > B_BUDGET && CB > 64) CB = (CB + 1) / 2;
    idx TG = B_BUDGET / ((idx)sizeof(float) * CB * NR);
    TG = TG < 1 ? 1 : TG > TG_MAX ? TG_MAX : TG > T ? T : TG;
    const idx groups = (T + TG - 1) / TG;
    TG = (T + groups - 1) / groups;
    /* the L rows as tiles of MR and, last, b tiles of MR - 1, so that no tile is cut */
    const idx L = m1 - m0, rem = L % MR;
    idx b = rem ? MR - rem : 0;
    if (b * (MR - 1) > L) b = 0;
    const idx split = m1 - b * (MR - 1);
    /* Slabs of SLAB_TILES tiles, each through every panel while its output rows (and their
     * residual) are in L2, when all the packed panels fit there too; else one slab. */
    const int slabs = (idx)sizeof(float) * K * pw_taps_packed_size(j->isa, 1, j->F) <= SLAB_BUDGET;
    /* The pointer tables of a slab's tiles, for all the taps, set once for all its panels
     * and K blocks when they take at most PTR_CACHE pointers (with runs, in slabs only: a
     * tile's padded copies of runs are then kept too; ResNet-50's stem, N=8, 95 -> 102
     * GFLOP/s, interleaved, medians of 15); else a tile's for its K block, as each comes,
     * its padded runs in one buffer. */
    const idx per_tile = T * MR, most = slabs ? SLAB_TILES : (m1 - m0) / (MR - 1) + 1;
    const int cached = most * per_tile <= PTR_CACHE && (!runs || slabs);
    const float **cache = NULL;
    if (cached) {
        const size_t floats = (size_t)(most * per_tile) * sizeof(float *) / sizeof(float);
        if ((cache = (const float **)pw_scratch(8, floats)) == NULL) return -1;
    }
    float *zero = pw_scratch(0, (size_t)KT);
    float *pad = runs ? pw_scratch(1, (size_t)((cached ? most * T : TG) * MR * KT)) : NULL;
    if (zero == NULL || (runs && pad == NULL)) return -1;
    memset(zero, 0, (size_t)KT * sizeof(float));
    const float *P[TG_MAX * 12];
    /* The weights: packed before the call (j->Wp), or packed here, by this thread, from
     * j->pack: with slabs, the part's panels all at once; else each K block of a panel (a
     * whole panel for OIHW k x k) right before its tiles, so it is written to L2 and read
     * from there, never stored to memory and read back, and each thread reads only the
     * weights of its own panels. */
    const taps_pack_job *p = j->pack;
    const int whole = p != NULL && (slabs || oihw(p)), blockwise = p != NULL && !whole;
    const float *Wp = j->Wp;
    float *own = NULL;
    idx floats = 0;
    if (p != NULL) {
        floats = slabs ? pw_taps_packed_size(j->isa, K, f1 - f0) : whole ? K * NR : TG * CB * NR;
        if ((own = pw_scratch(3, (size_t)floats)) == NULL) return -1;
        Wp = own;
        for (idx jc = f0; slabs && jc < f1; jc = panel_end(pn, jc))
            if (pw_taps_pack_panel(p, jc, own + (jc - f0) * K) != 0) return -1;
    }
    const idx wf0 = p != NULL && slabs ? f0 : 0;  /* panel jc at Wp + (jc - wf0) * K */
    /* R at Y: the output written over the residual, which is then where the sums start */
    const int into = j->R != NULL && j->R == j->Y && j->ldr == j->ldy;
    const float *R = into ? NULL : j->R;
    for (idx ma = m0, mb; ma < m1; ma = mb) {
        mb = ma;
        for (int t = 0; mb < m1 && (!slabs || t < SLAB_TILES); t++)
            mb += min_i(m1 - mb, mb < split ? MR : MR - 1);
        for (idx m = ma, q = 0; cache != NULL && m < mb; q++) {
            const int full = m < split ? MR : MR - 1, mr = (int)min_i(mb - m, full);
            tile_pointers(j, runs, m, mr, full, 0, T, zero, cache + q * per_tile,
                          runs ? pad + q * per_tile * KT : NULL);
            m += mr;
        }
        for (idx jc = f0; jc < f1; jc = panel_end(pn, jc)) {
            const int nr = (int)(panel_end(pn, jc) - jc), nv = (nr + vw - 1) / vw;
            const int width = nv * vw;
            const float *panel = whole && !slabs ? own : Wp + (jc - wf0) * K;
            if (whole && !slabs && pw_taps_pack_panel(p, jc, own) != 0) return -1;
            for (idx t0 = 0; t0 < T; t0 += TG) {
                const idx t1 = min_i(T, t0 + TG);
                for (idx c0 = 0; c0 < KT; c0 += CB) {
                    const idx kc = min_i(KT - c0, CB);
                    const int first = t0 == 0 && c0 == 0 && !into;
                    const int last = t1 == T && c0 + kc == KT;
                    const float *B = panel + (t0 * KT + c0) * width;
                    idx ldbt = KT * width;
                    if (blockwise) {  /* tap t's kc rows at own + (t - t0) * kc * width */
                        for (idx t = t0; t < t1; t++)
                            pack_panel(p, t * KT + c0, t * KT + c0 + kc, jc,
                                       own + (t - t0) * kc * width);
                        B = own;
                        ldbt = kc * width;
                    }
                    /* the next K block's weights, fetched into L2 a share per tile while
                     * this block computes, so they come from memory at the pace of the
                     * products rather than all at once when that block is packed: ResNet-50
                     * at N=1, its 7x7 3x3 convs 2.03-2.08 -> 1.88-1.98 ms, the convs' sum
                     * 59.2 -> 58.1 ms (A/B in one process); N=8 unchanged (343 / 342) */
                    idx nj = jc, nt0 = t0, nc0 = c0 + kc, pieces = 0, done = 0, tile = 0;
                    const idx tiles = (mb - ma + MR - 1) / MR;
                    if (nc0 >= KT) nc0 = 0, nt0 = t1;
                    if (nt0 >= T) nt0 = 0, nj = panel_end(pn, jc);
                    const idx nkc = min_i(KT - nc0, CB), nt1 = min_i(T, nt0 + TG);
                    if (blockwise && nj < f1) pieces = block_pieces(p, nt0, nt1, nkc);
                    for (idx m = ma, q = 0; m < mb; q++) {
                        const int full = m < split ? MR : MR - 1, mr = (int)min_i(mb - m, full);
                        if (pieces) {
                            const idx to = min_i(pieces, pieces * ++tile / tiles);
                            fetch_block(p, nj, nt0, nc0, nkc, KT, done, to);
                            done = to;
                        }
                        const tkern_t kern = m < split ? s->by_nv[nv] : s->less[nv];
                        const float *const *tp = P;
                        if (cache != NULL)
                            tp = cache + q * per_tile + t0 * full;
                        else
                            tile_pointers(j, runs, m, mr, full, t0, t1, zero, P, pad);
                        kern(t1 - t0, kc, tp, c0, full * j->sx * j->sw, B, width, ldbt,
                             j->Y + m * j->ldy + jc,
                             j->ldy, mr, nr, first, last, j->bias ? j->bias + jc : NULL,
                             R ? R + m * j->ldr + jc : NULL, j->ldr, j->act);
                        m += mr;
                    }
                }
            }
        }
    }
    if ((size_t)floats * sizeof(float) > KEEP_PANEL_BYTES) pw_scratch_drop(3);
    return 0;
}

/* Parts split the output pixels, or the panels of filters where that gives each part fewer
 * tile slots (small images: 7x7 512->512 at N=1 has 9 tiles of pixels and 8 panels), or as
 * many and fewer weights to read each (7x7 512->512, N=8: the weights are 9.4 MB, the
 * input 0.8 MB). */
void pw_taps_part(void *arg, int part, int parts) {
    taps_job *j = arg;
    const tshape_t *s = pw_taps_shape(j->isa, j->F, j->KH * j->KW);
    const panels_t pn = panels_of(j->isa, s, j->F);
    const idx M = j->N * j->Ho * j->Wo, tiles = (M + s->mr - 1) / s->mr, panels = pn.count;
    const idx by_m = (tiles + parts - 1) / parts * panels;
    const idx by_f = tiles * ((panels + parts - 1) / parts);
    const int split_f = panels >= parts && (by_f < by_m || (by_f == by_m &&
                        j->KH * j->KW * j->F > j->N * j->H * j->W));
    const int fp = split_f ? parts : 1, mp = parts / fp, pm = part / fp, pf = part % fp;
    const idx m0 = min_i(M, tiles * pm / mp * s->mr), m1 = min_i(M, tiles * (pm + 1) / mp * s->mr);
    const idx f0 = panel_start(pn, panels * pf / fp), f1 = panel_start(pn, panels * (pf + 1) / fp);
    if (m0 < m1 && f0 < f1 && taps_driver(j, m0, m1, f0, f1) != 0) atomic_store(&j->failed, 1);
}

idx pw_taps_packed_size(const isa_t *isa, idx K, idx F) {
    return K * ((F + isa->vw - 1) / isa->vw * isa->vw);
}

/* Where row k = (i, j, c) of the weight starts. */
static const float *pack_row(const taps_pack_job *p, idx k) {
    const idx c = k % p->C, j = k / p->C % p->KW, i = k / (p->C * p->KW);
    return p->W + i * p->si + j * p->sj + c * p->sc;
}

/* torch's OIHW k x k weight (a filter's C·KH·KW weights contiguous, in (c, i, j) order). */
static int oihw(const taps_pack_job *p) {
    const idx T = p->K / p->C;
    return p->sf != 1 && p->sj == 1 && p->si == p->KW && p->sc == T && T > 1;
}

/* Rows [k0, k1) of the panel of filters [jc, jc + nr) into dst, rows `width` floats apart,
 * zero-padded to width. With unit filter stride (HWIO) each row is one copy. With unit
 * channel stride (torch's OIHW at 1x1, or its channels_last weights) each tap's channels are
 * transposed a block at a time (transpose.c). Otherwise (OIHW k x k, see pack_oihw for the
 * whole panel) a block of TK rows at a time: the block's rows stay in L1 while the panel's
 * filters are read. */
enum { TK = 16 };
#ifndef PACK_AHEAD
#define PACK_AHEAD 8
#endif
static void pack_panel(const taps_pack_job *p, idx k0, idx k1, idx jc, float *dst) {
    const idx vw = p->isa->vw, nr = panel_end(pack_panels(p), jc) - jc;
    const idx width = (nr + vw - 1) / vw * vw;
    if (p->sf == 1) {
        for (idx k = k0; k < k1; k++) {
            if (k + PACK_AHEAD < k1) {  /* rows lie F floats apart: fetch ahead of the copy */
                const char *q = (const char *)(pack_row(p, k + PACK_AHEAD) + jc);
                for (idx b = 0; b < nr * (idx)sizeof(float); b += 64) __builtin_prefetch(q + b, 0, 2);
            }
            memcpy(dst + (k - k0) * width, pack_row(p, k) + jc, (size_t)nr * sizeof(float));
        }
    } else if (p->sc == 1) {
        for (idx k = k0, k1t; k < k1; k = k1t) {  /* the rows of one tap at a time */
            k1t = min_i(k1, (k / p->C + 1) * p->C);
            pw_transpose(pack_row(p, k) + jc * p->sf, p->sf, nr, k1t - k, dst + (k - k0) * width,
                         width);
        }
    } else {
        const float *row[TK];
        for (idx kb = k0; kb < k1; kb += TK) {
            const idx tk = min_i(k1 - kb, TK);
            for (idx t = 0; t < tk; t++) row[t] = pack_row(p, kb + t) + jc * p->sf;
            float *o = dst + (kb - k0) * width;
            for (idx f = 0; f < nr; f++)
                for (idx t = 0; t < tk; t++) o[t * width + f] = row[t][f * p->sf];
        }
    }
    for (idx k = k0; width > nr && k < k1; k++)  /* the padding columns */
        memset(dst + (k - k0) * width + nr, 0, (size_t)(width - nr) * sizeof(float));
}

/* The pieces of weight memory a K block (taps [t0, t1), kc channels from c0) of a panel is
 * packed from: with unit channel stride, each filter's kc channels of a tap; with unit
 * filter stride, each row's filters; 0 (nothing to fetch ahead) otherwise. */
static idx block_pieces(const taps_pack_job *p, idx t0, idx t1, idx kc) {
    const idx NR = pw_taps_shape(p->isa, p->F, p->K / p->C)->nv * p->isa->vw;
    if (p->sc == 1) return NR * (t1 - t0);
    return p->sf == 1 ? (t1 - t0) * kc : 0;
}

/* Fetch pieces [lo, hi) of that block (of panel jc) into L2. */
static void fetch_block(const taps_pack_job *p, idx jc, idx t0, idx c0, idx kc, idx KT,
                        idx lo, idx hi) {
    const idx NR = pw_taps_shape(p->isa, p->F, p->K / p->C)->nv * p->isa->vw;
    const idx nr = panel_end(pack_panels(p), jc) - jc;
    for (idx q = lo; q < hi; q++) {
        const char *a;
        idx bytes;
        if (p->sc == 1) {  /* piece q: filter q % NR, tap t0 + q / NR */
            if (q % NR >= nr) continue;
            a = (const char *)(pack_row(p, (t0 + q / NR) * KT + c0) + (jc + q % NR) * p->sf);
            bytes = kc * (idx)sizeof(float);
        } else {  /* piece q: row c0 + q % kc of tap t0 + q / kc */
            a = (const char *)(pack_row(p, (t0 + q / kc) * KT + c0 + q % kc) + jc);
            bytes = nr * (idx)sizeof(float);
        }
        for (idx b = 0; b < bytes; b += 64) _mm_prefetch(a + b, _MM_HINT_T1);
    }
}

/* The whole panel [jc, jc + nr) of torch's OIHW k x k weight into dst (K rows, width apart):
 * a chunk of CB channels at a time transposed into a buffer (its rows in (c, i, j) order)
 * and copied from there, row by row, to their places in (i, j, c) order. */
static int pack_oihw(const taps_pack_job *p, idx jc, float *dst) {
    const idx NR = pw_taps_shape(p->isa, p->F, p->K / p->C)->nv * p->isa->vw, vw = p->isa->vw;
    const idx nr = panel_end(pack_panels(p), jc) - jc, width = (nr + vw - 1) / vw * vw;
    const idx T = p->K / p->C, CB = T >= 256 ? 1 : 256 / T;
    float *tmp = pw_scratch(2, (size_t)(CB * T * NR));
    if (tmp == NULL) return -1;
    for (idx cb = 0; cb < p->C; cb += CB) {
        const idx nc = min_i(p->C - cb, CB);
        pw_transpose(p->W + jc * p->sf + cb * T, p->sf, nr, nc * T, tmp, NR);
        for (idx c = cb; c < cb + nc; c++)
            for (idx t = 0; t < T; t++) {
                float *o = dst + (t * p->C + c) * width;
                memcpy(o, tmp + ((c - cb) * T + t) * NR, (size_t)nr * sizeof(float));
                if (width > nr) memset(o + nr, 0, (size_t)(width - nr) * sizeof(float));
            }
    }
    return 0;
}

/* All K rows of the panel [jc, ...) into dst. */
int pw_taps_pack_panel(const taps_pack_job *p, idx jc, float *dst) {
    if (oihw(p)) return pack_oihw(p, jc, dst);
    pack_panel(p, 0, p->K, jc, dst);
    return 0;
}

/* The (K, F) matrix, rows ldw apart (KW = 0), as one tap of K channels. */
static taps_pack_job as_taps(const taps_pack_job *arg) {
    taps_pack_job plain = *arg;
    if (plain.KW == 0) {
        plain.KW = 1;
        plain.C = plain.K;
        plain.si = plain.sj = 0;
        plain.sc = plain.ldw;
        plain.sf = 1;
    }
    return plain;
}

/* The fused blocks split a packed 1x1 weight this way among the parts that split its
 * K (their expanded channels), each packing what it reads (module_blocks.c). */
void pw_taps_pack_rows(const taps_pack_job *arg, idx k0, idx k1) {
    const taps_pack_job plain = as_taps(arg), *p = &plain;
    const panels_t pn = pack_panels(p);
    for (idx jc = 0; jc < p->F && k0 < k1; jc = panel_end(pn, jc)) {
        const idx width = (panel_end(pn, jc) - jc + pn.vw - 1) / pn.vw * pn.vw;
        pack_panel(p, k0, k1, jc, p->out + jc * p->K + k0 * width);
    }
}

void pw_taps_pack_part(void *arg, int part, int parts) {
    const taps_pack_job plain = as_taps(arg), *p = &plain;
    const panels_t pn = pack_panels(p);
    const idx panels = pn.count;
    if (p->sf == 1) {  /* rows of filters in order: a part takes rows, read as one stream */
        const idx k0 = p->K * part / parts, k1 = p->K * (part + 1) / parts, vw = p->isa->vw;
        for (idx k = k0; k < k1; k++)
            for (idx jc = 0; jc < p->F; jc = panel_end(pn, jc)) {
                const idx width = (panel_end(pn, jc) - jc + vw - 1) / vw * vw;
                pack_panel(p, k, k + 1, jc, p->out + jc * p->K + k * width);
            }
        return;
    }
    /* a filter's weights in order: a part takes whole panels, split as pw_taps_part splits
     * them when it splits by filters */
    for (idx q = panels * part / parts; q < panels * (part + 1) / parts; q++)
        if (pw_taps_pack_panel(p, panel_start(pn, q), p->out + panel_start(pn, q) * p->K) != 0 &&
            p->failed != NULL)
            atomic_store(p->failed, 1);
}
#endif
