/* The kernels' own thread pool: run fn(arg, part, parts) for every part, the caller taking
 * part 0.
 *
 * Handing work to a sleeping thread costs ~60-130 us on these VMs (a futex wake of an idle
 * vCPU), as long as a small convolution. So a worker, once done, spins for SPIN_NS watching
 * for the next job before it sleeps; back-to-back calls (a network's layers) then start in
 * about a microsecond. The caller always takes part 0 itself. Only one job runs at a time;
 * a call that finds the pool busy (another Python thread) runs single-threaded instead of
 * waiting.
 *
 * The workers are placed off the caller's CPU before every job (place.c). */
#include "pointwise.h"

#ifdef PW_X86
#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

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
static _Thread_local int in_pool;  /* this thread is a worker, or holds the pool */
static placement pool_place = {.cpu = -1};  /* where the workers are (see pw_place) */

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
    in_pool = 1;
    atomic_store(&pool_place.tid[me], (int)syscall(SYS_gettid));
    int worked = 1;
    for (;;) {
        unsigned g = atomic_load_explicit(&job_gen, memory_order_acquire);
        /* Spin only after a job that had a part for us: a worker beyond the job's parts
         * (the allowed set shrank) would spin on a CPU that a working thread needs. */
        if (g == seen && worked) {
            const long until = now_ns() + SPIN_NS;
            for (int i = 0; g == seen; i++) {
                _mm_pause();
                g = atomic_load_explicit(&job_gen, memory_order_acquire);
                if ((i & 255) == 255 && now_ns() > until) break;
            }
        }
        if (g == seen) {
            pthread_mutex_lock(&pool_mu);
            while ((g = atomic_load_explicit(&job_gen, memory_order_acquire)) == seen)
                pthread_cond_wait(&pool_cv, &pool_mu);
            pthread_mutex_unlock(&pool_mu);
        }
        seen = g;
        worked = me < job_parts;
        if (worked) job_fn(job_arg, me, job_parts);
        atomic_fetch_sub_explicit(&job_pending, 1, memory_order_acq_rel);
    }
    return NULL;
}

int pw_in_pool(void) { return in_pool; }

int pw_set_in_pool(int on) {
    const int was = in_pool;
    in_pool = on;
    return was;
}

/* A forked child has none of the parent's threads: start the pool afresh on first use. */
void pw_pool_after_fork(void) {
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t c = PTHREAD_COND_INITIALIZER;
    pool_mu = m;
    job_mu = m;
    pool_cv = c;
    n_workers = 0;
    pw_place_reset(&pool_place);
    /* in_pool is per thread: the forking thread's own value is right for the child */
}

/* Post fn to the pool and take part 0; the caller holds job_mu. Returns 0, having run
 * nothing, when the pool cannot give `parts` threads and `all` asks for every one. */
static int post(part_fn fn, void *arg, int parts, int all) {
    /* at most the CPUs the caller may use (a job of OpenBLAS's needs all its parts) */
    parts = pw_place(&pool_place, n_workers, parts, !all);
    const int before = n_workers;
    while (n_workers < parts - 1 && n_workers < MAX_THREADS - 1) {  /* workers never stop */
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
        /* its thread id, for pw_place: the first job would otherwise find it unplaced */
        for (const long until = now_ns() + 10000000L;
             atomic_load(&pool_place.tid[n_workers]) == 0 && now_ns() < until;)
            sched_yield();
    }
    if (parts > n_workers + 1) {
        if (all) return 0;
        parts = n_workers + 1;
    }
    if (n_workers != before) pw_place(&pool_place, n_workers, parts, !all);
    if (parts <= 1) {  /* one allowed CPU: the workers stay asleep */
        fn(arg, 0, 1);
        return 1;
    }
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
    return 1;
}

/* Run fn(arg, part, parts) for part in [0, parts), on up to parts threads (no more than
 * the caller's allowed CPUs). */
void pw_run_parts(part_fn fn, void *arg, int parts) {
    if (parts > MAX_THREADS) parts = MAX_THREADS;
    if (parts <= 1 || in_pool || pthread_mutex_trylock(&job_mu) != 0) {
        for (int p = 0; p < parts; p++) fn(arg, p, parts);
        return;
    }
    in_pool = 1;
    post(fn, arg, parts, 0);
    in_pool = 0;
    pthread_mutex_unlock(&job_mu);
}

typedef struct { part_fn fn; void *arg; int part, parts; } spare_job;

static void *spare_main(void *p) {
    spare_job *s = p;
    s->fn(s->arg, s->part, s->parts);
    return NULL;
}

/* Run every part at once, each on a thread of its own: OpenBLAS's parts wait for one
 * another, so none may wait for a thread that runs another. Waits for the pool when
 * another call holds it; from inside a part (a worker, or the thread that holds the pool)
 * and when the pool cannot grow, the parts get threads started for this call. */
void pw_run_parts_all(part_fn fn, void *arg, int parts) {
    if (parts <= 1) {
        if (parts == 1) fn(arg, 0, 1);
        return;
    }
    if (!in_pool && parts <= MAX_THREADS) {
        pthread_mutex_lock(&job_mu);
        in_pool = 1;
        const int done = post(fn, arg, parts, 1);
        in_pool = 0;
        pthread_mutex_unlock(&job_mu);
        if (done) return;
    }
    spare_job *s = malloc(sizeof *s * (size_t)parts);
    pthread_t *t = malloc(sizeof *t * (size_t)parts);
    int started = 0;
    for (int p = 1; s != NULL && t != NULL && p < parts; p++) {
        s[p] = (spare_job){fn, arg, p, parts};
        if (pthread_create(&t[p], NULL, spare_main, &s[p]) != 0) break;
        started = p;
    }
    fn(arg, 0, parts);
    for (int p = 1; p <= started; p++) pthread_join(t[p], NULL);
    for (int p = started + 1; p < parts; p++) fn(arg, p, parts);  /* no thread to be had */
    free(s);
    free(t);
}
#endif
