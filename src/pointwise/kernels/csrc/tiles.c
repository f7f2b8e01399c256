/* What both drivers share: per-thread work buffers, and the loop that runs a micro-kernel
 * over a block of rows. */
#include "pointwise.h"

#ifdef PW_X86
#include <pthread.h>
#include <stdlib.h>

/* Per-thread work buffers, kept between calls and grown when needed: a fresh large
 * allocation per call is a fresh mmap, and its page faults cost more than a small GEMM.
 * They are freed when their thread ends (a pthread key's destructor), so Python threads
 * that come and go leave nothing behind. */
typedef struct {
    float *buf[SCRATCH_SLOTS];
    size_t size[SCRATCH_SLOTS];
} scratch_t;

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *p) {
    scratch_t *s = p;
    for (int i = 0; i < SCRATCH_SLOTS; i++) free(s->buf[i]);
    free(s);
}

static void scratch_init(void) { pthread_key_create(&scratch_key, scratch_free); }

float *pw_scratch(int which, size_t floats) {
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

/* Free the calling thread's buffer in slot `which` (one that should not stay between calls). */
void pw_scratch_drop(int which) {
    pthread_once(&scratch_once, scratch_init);
    scratch_t *s = pthread_getspecific(scratch_key);
    if (s == NULL) return;
    free(s->buf[which]);
    s->buf[which] = NULL;
    s->size[which] = 0;
}

/* One tile of rows [i, i + mr) with the kernel `kern` (MR rows) or, for the last rows,
 * a three-row kernel reading a zero-padded copy when fewer than three remain. */
void pw_tile_rows(kern_t kern, kern_t tail, int MR, idx i, idx m1, idx kc, const float *A,
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
#endif
