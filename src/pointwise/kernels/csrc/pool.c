/* The kernels' own thread pool: run fn(arg, part, parts) for every part, the caller taking
 * part 0.
 *
 * Handing work to a sleeping thread costs ~60 us on these VMs (a futex wake), as long as a
 * small convolution. So a worker, once done, spins for SPIN_NS watching for the next job
 * before it sleeps; back-to-back calls (a network's layers) then start in about a
 * microsecond. The caller always takes part 0 itself. Only one job runs at a time; a call
 * that finds the pool busy (another Python thread) runs single-threaded instead of waiting.
 */
#include "pointwise.h"

#ifdef PW_X86
#include <immintrin.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#define SPIN_NS 200000L

static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;   /* guards sleeping */
static pthread_cond_t pool_cv = PTHREAD_COND_INITIALIZER;
static pthread_mutex_t job_mu = PTHREAD_MUTEX_INITIALIZER;    /* one job at a time */
static atomic_uint job_gen;
static atomic_int job_pending;
static part_fn job_fn;
static void *job_arg;
static int job_parts;
static int n_workers;

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

typedef struct { int me; unsigned seen; } worker_start;

static void *worker_main(void *p) {
    /* me: 1 .. n_workers. seen: the generation before the worker existed (the creator holds
     * job_mu, so no job can be posted between the two), read by the creator: a worker that
     * read it itself could miss the job posted right after its creation. */
    const int me = ((worker_start *)p)->me;
    unsigned seen = ((worker_start *)p)->seen;
    free(p);
    for (;;) {
        unsigned g = atomic_load_explicit(&job_gen, memory_order_acquire);
        if (g == seen) {
            const long until = now_ns() + SPIN_NS;
            for (int i = 0; g == seen; i++) {
                _mm_pause();
                g = atomic_load_explicit(&job_gen, memory_order_acquire);
                if ((i & 255) == 255 && now_ns() > until) break;
            }
            if (g == seen) {
                pthread_mutex_lock(&pool_mu);
                while ((g = atomic_load_explicit(&job_gen, memory_order_acquire)) == seen)
                    pthread_cond_wait(&pool_cv, &pool_mu);
                pthread_mutex_unlock(&pool_mu);
            }
        }
        seen = g;
        if (me < job_parts) job_fn(job_arg, me, job_parts);
        atomic_fetch_sub_explicit(&job_pending, 1, memory_order_acq_rel);
    }
    return NULL;
}

/* A forked child has none of the parent's threads: start the pool afresh on first use. */
void pw_pool_after_fork(void) {
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t c = PTHREAD_COND_INITIALIZER;
    pool_mu = m;
    job_mu = m;
    pool_cv = c;
    n_workers = 0;
}

/* Run fn(arg, part, parts) for part in [0, parts), on up to parts threads. */
void pw_run_parts(part_fn fn, void *arg, int parts) {
    if (parts > MAX_THREADS) parts = MAX_THREADS;
    if (parts <= 1 || pthread_mutex_trylock(&job_mu) != 0) {
        for (int p = 0; p < parts; p++) fn(arg, p, parts);
        return;
    }
    while (n_workers < parts - 1) {  /* grow the pool; workers are never stopped */
        pthread_t t;
        worker_start *w = malloc(sizeof *w);
        if (w == NULL) break;
        w->me = n_workers + 1;
        w->seen = atomic_load_explicit(&job_gen, memory_order_acquire);
        if (pthread_create(&t, NULL, worker_main, w) != 0) {
            free(w);
            break;
        }
        pthread_detach(t);
        n_workers++;
    }
    if (parts > n_workers + 1) parts = n_workers + 1;
    job_fn = fn;
    job_arg = arg;
    job_parts = parts;
    atomic_store_explicit(&job_pending, n_workers, memory_order_release);
    pthread_mutex_lock(&pool_mu);
    atomic_fetch_add_explicit(&job_gen, 1, memory_order_acq_rel);
    pthread_cond_broadcast(&pool_cv);
    pthread_mutex_unlock(&pool_mu);
    fn(arg, 0, parts);
    while (atomic_load_explicit(&job_pending, memory_order_acquire) > 0) _mm_pause();
    pthread_mutex_unlock(&job_mu);
}
#endif
