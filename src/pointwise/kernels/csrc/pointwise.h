/* What the kernels' C sources share: types, tile shapes, and each file's entry points.
 *
 * Float32 GEMM kernels for the 1x1 convolution, with the epilogue fused, and a small thread
 * pool that shares each call among the cores.
 *
 * Y = act(A @ B + bias) where the small operand is read straight from memory and the large
 * one is cut into panels. Each output tile is produced in registers over the whole K block
 * and, on the last block, gets its bias and activation before it is stored: the output is
 * written once, which is what NumPy's separate passes (and OpenBLAS's packing of the large
 * operand) cannot do. Two drivers share one micro-kernel:
 *
 *   rows  (channels-last):  Y[m, :]   = act(X[m, :] @ W + b)      X: M x K, W: K x N
 *   cols  (channels-first): Y[n][:, p] = act(W @ X[n][:, p] + b)   W: F x K, X[n]: K x P
 *
 * A third, taps, computes a k x k convolution as the sum over its taps of 1x1 products on
 * shifted views of a channels-last input, with a micro-kernel whose K loop walks the taps.
 *
 * Each driver works on a range of rows or columns; run_parts() hands the ranges to the pool
 * with the GIL released.
 *
 * The files, one concept each:
 *   microkernels.c  the register-tiled micro-kernels and the instruction sets' tile tables
 *   tiles.c         per-thread work buffers and the loop of tiles over a block of rows
 *   rows.c, cols.c  the channels-last and channels-first drivers, and their parallel jobs
 *   taps.c          the k x k driver (an implicit GEMM over the taps) and its weight packing
 *   transpose.c     transposed copies: weights packed from torch's (F, C) storage
 *   moments.c       the float64 scatter (X - s)^T (X - s) of pixel vectors: its lower triangle
 *   head.c          a network's head: the global average pool, and x @ W^T + b (W torch's)
 *   depthwise.c     the depthwise 3x3 driver, and its row function the fused blocks share
 *   maxpool.c       max pooling, channels-last
 *   blocks.c        the fused blocks: expand 1x1, depthwise 3x3, project 1x1 by bands of rows
 *   place.c         where helper threads run: each on a CPU of its own, never the caller's
 *   pool.c          the kernels' own spinning thread pool
 *   openblas.c      OpenBLAS's threaded work (NumPy's matmul) run on that pool
 *   openmp.c        running a job on the host's (torch's) OpenMP team instead
 *   module.c        the Python interface: argument checks, buffers, the GIL
 *   module_at.c     ... its entries that take operands by address (pointwise.nn's calls)
 *   module_blocks.c ... its entry for the fused blocks
 *   module_moments.c ... its entry for the scatter of pixel vectors
 *   module_head.c   ... its entries for the head (by address)
 *
 * Everything but module.c is compiled for x86-64 with GCC or clang only (PW_X86); elsewhere
 * the module loads, reports no instruction set, and declines every call.
 */
#ifndef POINTWISE_KERNELS_H
#define POINTWISE_KERNELS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>

typedef Py_ssize_t idx;

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define PW_X86 1
#include <sched.h>
#include <stdatomic.h>

enum { ACT_NONE = 0, ACT_RELU = 1, ACT_RELU6 = 2 };
enum { KC = 256 };       /* K block of the rows driver: an A row slice stays in L1 */
/* ... with AVX2 (isa_t's kc). The 6x16 tile alone on Zen 3 (a 192-row slab in L2, C
 * accumulated, 1 thread): 90 GFLOP/s at kc = 128, 96 at 256, 97-98 at 384 and 512; half the
 * K blocks also halve the passes over C. The driver at 512 against 256, N=8, 1 thread, best
 * of 40 calls, both builds in one process (/work/notes/runs/gemm2/abso.py), plain and
 * bias+ReLU: 28x28 512->128 67 -> 73 and 79 -> 88 GFLOP/s, 14x14 1024->256 67 -> 71 and
 * 82 -> 86, 7x7 512->2048 72 -> 79 and 82 -> 86, 7x7 2048->512 66 -> 68 and 60 -> 63.
 * At most KC_COLS (tiles.c's tail copies). */
enum { KC_AVX2 = 512 };
enum { KC_COLS = 512 };  /* K block of the cols driver */
enum { MAX_THREADS = 64 };

/* C[mr x nr] (+)= A[mr x kc] @ Bp[kc x nr], with the epilogue on the last K block; see
 * microkernels.c for the arguments. */
typedef void (*kern_t)(idx, const float *, idx, const float *, idx, float *, idx, int, int, int, int,
                       const float *, const float *, const float *, idx, int);

typedef struct {
    int mr, nv;          /* rows of a tile, vectors in the widest panel */
    kern_t by_nv[5];     /* kernel for a panel of 1..nv vectors */
    kern_t tail[5];      /* three-row kernel for the last rows */
} shape_t;

/* An instruction set: its vector width, and its tile shapes by class. The rows driver takes
 * class min(ceil(N / vw), classes): the narrowest tile that covers N, or the widest. */
typedef struct isa_t {
    const char *name;
    int vw, classes;
    shape_t shapes[5];   /* [class], class 1.. */
    shape_t cols;        /* the tile of the cols driver */
    shape_t cols_small;  /* ... below COLS_SMALL_F filters, where row tails would cost */
    idx kc;              /* K block of the rows driver: KC, or KC_AVX2 */
} isa_t;

static inline idx min_i(idx a, idx b) { return a < b ? a : b; }

/* An operand given by address (the *_at entries): a float32 address, nonzero and 4-byte
 * aligned (optional: 0 is NULL). */
static inline int pw_address(unsigned long long a, int optional, const float **p) {
    *p = (const float *)(uintptr_t)a;
    return (a == 0 && optional) || (a != 0 && (a & 3) == 0);
}

/* C[mr x nr] (+)= sum over T taps t of A_t[mr x kc] @ B_t[kc x nr], where row r of A_t
 * starts at P[t * MR + r] + koff and row k of B_t at B + t * ldbt + k * ldb; the epilogue as
 * for kern_t (bias by column only); the next tile's rows are fetched `next` floats on. See
 * microkernels.c. */
typedef void (*tkern_t)(idx T, idx kc, const float *const *P, idx koff, idx next,
                        const float *B, idx ldb, idx ldbt, float *C, idx ldc, int mr, int nr,
                        int first, int last, const float *bias, const float *R, idx ldr,
                        int act);

typedef struct {
    int mr, nv;          /* rows of a tile, vectors in the widest panel */
    tkern_t by_nv[5];    /* kernel for a panel of 1..nv vectors, mr rows */
    tkern_t less[5];     /* ... and mr - 1 rows: row counts that are no multiple of mr */
    int even;            /* panels as even as whole vectors allow, not all nv but the last */
} tshape_t;

/* microkernels.c */
const shape_t *pw_cols_shape(const isa_t *isa, idx F);
const shape_t *pw_rows_shape(const isa_t *isa, idx N);
const tshape_t *pw_taps_shape(const isa_t *isa, idx F, idx T);

/* tiles.c: per-thread buffers, slots 0 .. SCRATCH_SLOTS - 1, kept between calls */
enum { SCRATCH_SLOTS = 9 };
float *pw_scratch(int which, size_t floats);
void pw_scratch_drop(int which);
void pw_tile_rows(kern_t kern, kern_t tail, int MR, idx i, idx m1, idx kc, const float *A, idx lda,
                  const float *Bp, idx ldb, float *C, idx ldc, int nr, int first, int last,
                  const float *bcol, const float *brow, const float *R, idx ldr, int act,
                  idx bias_step);

/* Where the rows of a channels-last input lie when they are not evenly spaced: row
 * m = (n, i, j) of an (N, Ho, Wo, C) view starts at n * sn + i * sh + j * sw (in floats).
 * A strided convolution reads such a view; its rows are gathered slab by slab into a
 * buffer that stays in L2, instead of into a full copy of the input. */
typedef struct {
    idx ho, wo, sn, sh, sw;
} grid_t;

/* A job is cut into parts; part p of parts runs fn(arg, p, parts). */
typedef void (*part_fn)(void *arg, int part, int parts);

/* rows.c: Y[m, :] = act(X[m, :] @ W + bias + R[m, :]) for the M rows, R possibly NULL. */
typedef struct {
    const isa_t *isa;
    idx M, K, N, ldx, ldw, ldy;
    const float *X, *W, *bias;
    float *Y;
    int act;
    atomic_int failed;
    const grid_t *grid;  /* NULL: X's rows are ldx apart */
    const float *R;      /* NULL, or the residual added before the activation */
    idx ldr;
    int wt;              /* W column-major: column n at W + n * ldw (torch's (F, C) weight) */
} rows_job;
void pw_rows_part(void *arg, int part, int parts);

/* cols.c: Y[n][:, p] = act(W @ X[n][:, p] + bias) for the N images of P pixels. */
typedef struct {
    const isa_t *isa;
    idx N, P, K, F, ldw, xn, xc, yn, yf;
    const float *W, *X, *bias;
    float *Y;
    int act;
    atomic_int failed;
} cols_job;
void pw_cols_part(void *arg, int part, int parts);

/* taps.c: pack HWIO weights (K = KH * KW * C rows of F) for the taps driver, rows [k0, k1)
 * per part; out holds pw_taps_packed_size(isa, K, F) floats. With KW = 0 the weight is the
 * (K, F) matrix at W, rows ldw apart; otherwise element (i, j, c, f) is at W + i * si +
 * j * sj + c * sc + f * sf: any strides, torch's OIHW storage read through its (KH, KW, C, F)
 * view included. */
typedef struct {
    const isa_t *isa;
    const float *W;
    idx K, F, ldw;
    float *out;
    idx KW, C, si, sj, sc, sf;
    atomic_int *failed;  /* NULL, or set when a part ran out of memory */
} taps_pack_job;
idx pw_taps_packed_size(const isa_t *isa, idx K, idx F);
void pw_taps_pack_part(void *arg, int part, int parts);
/* All K rows of the panel of filters starting at jc into dst (K rows of the panel's width);
 * 0, or -1 when out of memory. */
int pw_taps_pack_panel(const taps_pack_job *p, idx jc, float *dst);
/* Rows [k0, k1) of every panel, for a 1x1 weight (KW = 0, or one tap). */
void pw_taps_pack_rows(const taps_pack_job *p, idx k0, idx k1);

/* taps.c: Y[m, :] = act(sum over taps of X shifted @ W[tap] + bias + R[m, :]) for the
 * M = N * Ho * Wo output pixels of a k x k convolution of X (N, H, W, C), channels unit
 * stride; W packed by pw_taps_pack_part (panels of the tile's width, see taps.c), or, with
 * pack, packed by the driver itself, each thread its own panels, as it goes. */
typedef struct {
    const isa_t *isa;
    idx N, H, W, C, sn, sh, sw;      /* X and its strides, in floats */
    idx KH, KW, F;                   /* the kernel */
    idx sy, sx, py, px, dy, dx;      /* stride, padding at the top and left, dilation */
    idx Ho, Wo;
    const float *X, *Wp, *bias, *R;  /* R: NULL, or rows ldr apart */
    idx ldr;
    float *Y;                        /* rows ldy apart */
    idx ldy;
    int act;
    atomic_int failed;
    const taps_pack_job *pack;       /* NULL (Wp packed), or the weights Wp is packed from */
} taps_job;
void pw_taps_part(void *arg, int part, int parts);


/* depthwise.c: Y[m, :] = act(sum over the 3x3 taps of X shifted * Wt[tap] + bias), channel
 * by channel, padding 1, stride s (1 or 2), for the M = N * Ho * Wo output pixels of X
 * (N, H, W, C), channels unit stride; Wt (3, 3, C) contiguous. */
typedef struct {
    const isa_t *isa;
    idx N, H, W, C, sn, sh, sw;      /* X and its strides, in floats */
    int s;
    idx Ho, Wo;
    const float *X, *Wt, *bias;
    float *Y;                        /* pixels ldy apart */
    idx ldy;
    int act;
    atomic_int failed;
} dw_job;
void pw_dw_part(void *arg, int part, int parts);
/* One output row of Wo pixels (ldy apart) from three input rows (NULL: padding) of W pixels
 * sw apart; zero holds C zeros. */
typedef void (*dw_row_t)(const float *const *rows, idx W, idx sw, idx C, idx Wo, int s,
                         const float *w, const float *bias, float *y, idx ldy, int act,
                         const float *zero);
dw_row_t pw_dw_row(const isa_t *isa);

/* maxpool.c: Y[m, :] = max over the KH x KW window (clipped to the image) of X's pixels, for
 * the M = N * Ho * Wo output pixels of X (N, H, W, C), channels unit stride. */
typedef struct {
    const isa_t *isa;
    idx N, H, W, C, sn, sh, sw;      /* X and its strides, in floats */
    idx KH, KW, sy, sx, py, px, Ho, Wo;
    const float *X;
    float *Y;                        /* pixels ldy apart */
    idx ldy;
} pool_job;
void pw_pool_part(void *arg, int part, int parts);

/* blocks.c: Y = act_p(act_d(dw3x3_s(act_e(X @ We + be)) + bd) @ Wp + bp [+ X]) for the
 * M = N * Ho * Wo output pixels of X (N, H, W, C), channels unit stride; We (C x E) and Wp
 * (E x F) packed as pw_taps_pack_part packs them, We NULL: no expansion (E = C); Wd
 * (3, 3, E) contiguous. The residual needs s = 1, C = F and each image's rows one run of
 * pixels (sh = W * sw). */
typedef struct {
    const isa_t *isa;
    idx N, H, W, C, sn, sh, sw;      /* X and its strides, in floats */
    idx E, F;
    int s;
    idx Ho, Wo;
    const float *X, *We, *be, *Wd, *bd, *Wp, *bp;
    int act_e, act_d, act_p, residual;
    float *Y;                        /* output pixels ldy apart */
    idx ldy;
    atomic_int failed;
    float *partial;  /* NULL, or room for (parts - 1) partial products (M x F) */
    int esplit;      /* set by the run: parts that split the channels, to sum (pw_block_reduce) */
    /* the output rows each part has yet to take, where parts take over each other's
     * (blocks.c's claim()): zero before the run */
    _Atomic unsigned long long left[MAX_THREADS];
} block_job;
void pw_block_part(void *arg, int part, int parts);
void pw_block_reduce(const block_job *j);
int pw_block_splits_channels(const block_job *j, int parts);
int pw_block_eslice(const block_job *j, int part, int parts, idx *e0, idx *e1);

/* head.c: Y[n, f] = bias[f] + sum_c X[n, c] W[f, c] for the N rows of X (ldx apart) and the
 * F rows of W (ldw apart, torch's Linear weight read in place); bias NULL for none. */
typedef struct {
    const isa_t *isa;
    idx N, C, F, ldx, ldw, ldy;
    const float *X, *W, *bias;
    float *Y;
    atomic_int failed;
} linear_job;
void pw_linear_part(void *arg, int part, int parts);

/* head.c: Y[n, c] = the mean of X[n, i, j, c] over the H x W pixels of X (N, H, W, C),
 * channels unit stride, pixels sn, sh, sw floats apart; summed in float64. */
typedef struct {
    const isa_t *isa;
    idx N, H, W, C, sn, sh, sw;
    const float *X;
    float *Y;            /* rows ldy apart */
    idx ldy;
    atomic_int failed;
} mean_job;
void pw_mean_part(void *arg, int part, int parts);

/* transpose.c: d[c * ldd + r] = s[r * lds + c] for r < rows, c < cols */
void pw_transpose(const float *s, idx lds, idx rows, idx cols, float *d, idx ldd);

/* place.c: where a caller's helper threads run (helper k's id in tid[k], k >= 1) */
typedef struct {
    atomic_int tid[MAX_THREADS];
    int cpu, helpers;  /* the caller's CPU they are placed around, -1: not placed */
    cpu_set_t set;     /* ... within the caller's allowed set */
    long at;           /* ... read at this time (ns) */
} placement;
void pw_place_reset(placement *pl);
/* Bind helpers 1..helpers off the caller's CPU; returns parts, or, with clamp, at most the
 * caller's allowed CPUs. */
int pw_place(placement *pl, int helpers, int parts, int clamp);
/* Bind thread `tid`, the caller's k-th helper, as pw_place would, its mask saved first in
 * `saved`; 1 if it did. */
int pw_bind_helper(int tid, const cpu_set_t *set, int cpu, int k, cpu_set_t *saved);
/* Move the calling thread off `cpu` if it runs there, to the rest of `set`; 1 if it did. */
int pw_move_off(int cpu, const cpu_set_t *set);

/* pool.c: run_parts shares a job among up to `parts` threads (fewer when the pool is busy or
 * the caller may use fewer CPUs); run_parts_all gives every part a thread of its own. */
void pw_run_parts(part_fn fn, void *arg, int parts);
void pw_run_parts_all(part_fn fn, void *arg, int parts);
int pw_in_pool(void);          /* this thread runs a part (or holds the pool) */
int pw_set_in_pool(int on);    /* ... say so from another runtime's thread; returns before */
void pw_pool_after_fork(void);

/* openblas.c: OpenBLAS's threaded work on the pool (setter: its set_threads_callback) */
void pw_share_blas(void *setter, int on);
void pw_blas_after_fork(void);

/* openmp.c */
int pw_bind_openmp(const char *path);
int pw_openmp_bound(void);
void pw_run_parts_openmp(part_fn fn, void *arg, int parts);
void pw_run_parts_openmp_all(part_fn fn, void *arg, int parts);
/* moments.c: the mean mu = 1^T X / M and scatter S = (X - mu)^T (X - mu) of the M rows of
 * X (M x C, float32 or float64; row m is row m % P of run m / P, run r at (r / H) * sn +
 * (r % H) * sh elements, its rows sm and channels sc apart), in float64, a shift per
 * segment of rows. Part p works in work + p * pw_moments_work(C); pw_moments_reduce merges
 * the parts. */
enum { PW_MOMENTS_C = 0, PW_MOMENTS_AVX2 = 1, PW_MOMENTS_AVX512 = 2 };
typedef struct {
    int path;            /* PW_MOMENTS_*: the micro-kernel */
    int f64;             /* X is float64 (else float32) */
    idx M, C, sm, sc, P, sn, H, sh;  /* H >= 1 runs sh apart per sn */
    const void *X;
    idx segment, block;  /* rows that share a shift; rows packed at a time */
    double *work;
    atomic_int failed;
    atomic_int parts;    /* the parts the job ran in (the pool may give fewer than asked) */
} moments_job;
void pw_moments_part(void *arg, int part, int parts);
void pw_moments_reduce(moments_job *j, int parts, double *mean, double *S, idx lds);
idx pw_moments_work(idx C);
#else
typedef struct isa_t { const char *name; } isa_t;
#endif

/* module.c: what its entry points share with module_blocks.c */
int pw_float_view(PyObject *obj, Py_buffer *v, int ndim, int writable);
int pw_overlaps(const Py_buffer *views, int n, int out);
void pw_release(Py_buffer *views, int n);
PyObject *pw_answer(Py_buffer *views, int n, int ok);
int pw_check_options(int act, int openmp);
const isa_t *pw_current(void);
#ifdef PW_X86
int pw_run_released(part_fn fn, void *job, long long macs, int threads, atomic_int *failed,
                    int openmp);
#endif
/* module_blocks.c */
PyObject *pw_py_block(PyObject *self, PyObject *args);
PyObject *pw_py_block_at(PyObject *self, PyObject *args);
/* module_moments.c */
PyObject *pw_py_moments(PyObject *self, PyObject *args);
/* module_at.c */
PyObject *pw_py_rows_at(PyObject *self, PyObject *args);
PyObject *pw_py_cols_at(PyObject *self, PyObject *args);
PyObject *pw_py_taps_at(PyObject *self, PyObject *args);
PyObject *pw_py_maxpool_at(PyObject *self, PyObject *args);
/* module_head.c */
PyObject *pw_py_linear_at(PyObject *self, PyObject *args);
PyObject *pw_py_mean_at(PyObject *self, PyObject *args);

/* microkernels.c (a stub that answers NULL off x86-64): the instruction set a name asks for,
 * "avx512" or "avx2", if this CPU runs it. */
const isa_t *pw_isa_named(const char *name);

#endif
