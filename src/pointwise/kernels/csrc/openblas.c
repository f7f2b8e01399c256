/* OpenBLAS's threaded work (NumPy's matmul) run where the kernels run: on their own pool, or
 * on the host's OpenMP team once one is bound (torch's; see openmp.c).
 *
 * After each multi-threaded call OpenBLAS's workers spin for ~0.1 s (2^28 TSC cycles, with
 * no yield on x86-64), and the kernels' pool spins for a while after its own calls: a script
 * that mixes np.matmul with pointwise calls ran each at 0.41-0.64x of its speed alone,
 * because the two pools' threads took turns on the same two cores. OpenBLAS (0.3.27 and
 * later) lets a program run its parallel work on threads of its own choosing
 * (openblas_set_threads_callback_function); with this callback installed, one pool serves
 * both libraries, and whichever ran last leaves the threads the next call needs awake. In
 * the same pattern both then ran at 0.90-1.05x (28x28 192->64, 14x14 1024->256,
 * 56x56 24->144, N=8), and NumPy's matmul alone kept its speed. With torch in the mix, the
 * three libraries kept 0.73-1.02x of their speed alone only when all three ran on torch's
 * team; with OpenBLAS on the pool and pointwise on torch's team, NumPy fell to 0.52-0.92x.
 *
 * OpenBLAS hands over numjobs jobs that must all run at once: the parts of a level-3 call
 * wait for panels that the other parts pack. pw_run_parts_openmp_all() guarantees a thread
 * per job. OpenBLAS also keeps one work buffer per job index, so two calls must not run at once:
 * blas_mu serializes them, as OpenBLAS's own server does.
 */
#include "pointwise.h"

#ifdef PW_X86
#include <pthread.h>

typedef void (*blas_dojob)(int thread_num, void *jobdata, int dojob_data);
typedef void (*blas_callback)(int sync, blas_dojob dojob, int numjobs, size_t jobdata_size,
                              void *jobdata, int dojob_data);
typedef void (*blas_setter)(blas_callback callback);

typedef struct {
    blas_dojob dojob;
    char *jobs;
    size_t size;
    int extra;
} blas_job;

static pthread_mutex_t blas_mu = PTHREAD_MUTEX_INITIALIZER;
static _Thread_local int in_blas;

static void blas_part(void *arg, int part, int parts) {
    (void)parts;
    const blas_job *j = arg;
    j->dojob(part, j->jobs + (size_t)part * j->size, j->extra);
}

static void on_blas_threads(int sync, blas_dojob dojob, int numjobs, size_t size, void *jobs,
                            int extra) {
    (void)sync;  /* OpenBLAS waits for the jobs either way: so do we */
    blas_job j = {dojob, jobs, size, extra};
    /* A call from inside a job (not one OpenBLAS makes today) must not wait for itself. */
    const int outer = in_blas, nested = outer || pw_in_pool();
    if (!nested) pthread_mutex_lock(&blas_mu);
    in_blas = 1;
    pw_run_parts_openmp_all(blas_part, &j, numjobs);
    in_blas = outer;
    if (!nested) pthread_mutex_unlock(&blas_mu);
}

/* Install the callback through OpenBLAS's setter at `address`, or remove it (on = 0):
 * OpenBLAS's own threads then take the work again. */
void pw_share_blas(void *address, int on) {
    blas_setter set;
    *(void **)&set = address;
    set(on ? on_blas_threads : NULL);
}

void pw_blas_after_fork(void) {
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    blas_mu = m;
}
#endif
