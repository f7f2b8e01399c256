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
 * Each driver works on a range of rows or columns; run_parts() hands the ranges to the pool
 * with the GIL released.
 *
 * The files, one concept each:
 *   microkernels.c  the register-tiled micro-kernels and the instruction sets' tile tables
 *   tiles.c         per-thread work buffers and the loop of tiles over a block of rows
 *   rows.c, cols.c  the channels-last and channels-first drivers, and their parallel jobs
 *   pool.c          the kernels' own spinning thread pool
 *   openmp.c        running a job on the host's (torch's) OpenMP team instead
 *   module.c        the Python interface: argument checks, buffers, the GIL
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
#include <stdatomic.h>

enum { ACT_NONE = 0, ACT_RELU = 1, ACT_RELU6 = 2 };
enum { KC = 256 };       /* K block of the rows driver: an A row slice stays in L1 */
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
} isa_t;

static inline idx min_i(idx a, idx b) { return a < b ? a : b; }

/* microkernels.c */
const shape_t *pw_cols_shape(const isa_t *isa, idx F);
const shape_t *pw_rows_shape(const isa_t *isa, idx N);

/* tiles.c */
float *pw_scratch(int which, size_t floats);
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

/* pool.c */
void pw_run_parts(part_fn fn, void *arg, int parts);
void pw_pool_after_fork(void);

/* openmp.c */
int pw_bind_openmp(const char *path);
int pw_openmp_bound(void);
void pw_run_parts_openmp(part_fn fn, void *arg, int parts);
#else
typedef struct isa_t { const char *name; } isa_t;
#endif

/* microkernels.c (a stub that answers NULL off x86-64): the instruction set a name asks for,
 * "avx512" or "avx2", if this CPU runs it. */
const isa_t *pw_isa_named(const char *name);

#endif
