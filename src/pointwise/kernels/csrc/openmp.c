/* Running a job on the host's OpenMP team instead of the kernels' own pool.
 *
 * Inside a torch model our pool and torch's OpenMP team take turns on the same cores, and
 * each spins for a while after its own work: every hand-over then runs two busy threads per
 * core. (A converted ResNet-50 ran 568 ms against 424 ms on torch alone.) So a caller that
 * already has libgomp loaded, torch, may bind to it (openmp()) and run a call's parts on that
 * very team, whose threads are the ones still spinning from the previous layer. GOMP_parallel
 * is the entry point GCC emits for `#pragma omp parallel`; it is stable across libgomp
 * versions since GCC 4.9.
 *
 * The team's threads are placed off the calling thread's CPU as the pool's are (place.c),
 * but only for our region: the team is torch's, and its threads, left bound, ran torch's own
 * ops on one CPU whenever the caller came to a team thread's CPU (torch's bursts fell to
 * 6-10 GFLOP/s in 12 of 16 rounds at 28x28 192->64, N=8, against 103-208 since). A region that follows IDLE_NS
 * without one binds the team's threads (their ids recorded in the previous region) before
 * it wakes them, as pw_place does, and each gets its own mask back at the region's end;
 * in a burst, when the threads spin where they last ran, nothing is bound. A thread that
 * still finds itself on the caller's CPU moves off it for the region.
 *
 * GNU libgomp does not survive fork() once it has run a team (the child waits for threads
 * it no longer has), so a forked child runs everything on the kernels' own pool.
 */
#include "pointwise.h"

#ifdef PW_X86
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static void (*gomp_parallel)(void (*)(void *), void *, unsigned, unsigned);
static int (*omp_thread_num)(void);
static int (*omp_num_threads)(void);
static pid_t bound_pid;  /* the process that bound: a forked child does not use the team */

/* Past this long without a region of ours, the team's threads may sleep: waking, they
 * would go where the scheduler puts them, often the caller's CPU (place.c). */
#define IDLE_NS 1000000L

/* Per calling thread (libgomp gives every thread that opens a region a team of its own):
 * its allowed set (read again as pw_place does), its team's thread ids, its last region. */
static _Thread_local placement caller = {.cpu = -1};
static _Thread_local long last_region;

typedef struct {
    part_fn fn;
    void *arg;
    int parts, all, cpu;  /* all: every part on a thread of its own; cpu: the caller's */
    placement *team;      /* where team thread k writes its id, tid[k] */
    cpu_set_t *saved;     /* [k]: team thread k's mask, when bound for this region */
    unsigned char *bound; /* [k]: whether it was */
} omp_job;

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

typedef struct { const omp_job *job; int part; } spare;

static void *spare_main(void *p) {
    const spare *s = p;
    s->job->fn(s->job->arg, s->part, s->job->parts);
    return NULL;
}

static void parts_of(const omp_job *j, int me, int team);

static void omp_body(void *p) {
    const omp_job *j = p;
    const int me = omp_thread_num(), team = omp_num_threads();
    const int bound = me > 0 && me < j->parts && j->bound[me];
    if (me > 0 && me < MAX_THREADS) atomic_store(&j->team->tid[me], (int)syscall(SYS_gettid));
    cpu_set_t own;  /* the team thread's own mask, torch's to choose: given back at the end */
    const int moved = me > 0 && !bound && sched_getcpu() == j->cpu &&
                      sched_getaffinity(0, sizeof own, &own) == 0 && pw_move_off(j->cpu, &own);
    const int outer = pw_set_in_pool(1);  /* a call from inside a part runs where it is */
    parts_of(j, me, team);
    pw_set_in_pool(outer);
    if (moved) sched_setaffinity(0, sizeof own, &own);
    if (bound) sched_setaffinity(0, sizeof j->saved[me], &j->saved[me]);
}

static void parts_of(const omp_job *j, int me, int team) {
    if (!j->all) {
        for (int part = me; part < j->parts; part += team) j->fn(j->arg, part, j->parts);
        return;
    }
    /* A smaller team than parts (nested in another region, a thread limit): the parts
     * beyond it get threads of their own, for they wait for one another. */
    spare *extra = NULL;
    pthread_t *t = NULL;
    int started = 0;
    if (me == 0 && team < j->parts) {
        extra = malloc(sizeof *extra * (size_t)(j->parts - team));
        t = malloc(sizeof *t * (size_t)(j->parts - team));
        for (int k = 0; extra != NULL && t != NULL && team + k < j->parts; k++) {
            extra[k] = (spare){j, team + k};
            if (pthread_create(&t[k], NULL, spare_main, &extra[k]) != 0) break;
            started = k + 1;
        }
    }
    if (me < j->parts) j->fn(j->arg, me, j->parts);
    for (int k = 0; k < started; k++) pthread_join(t[k], NULL);
    if (me == 0)
        for (int part = team + started; part < j->parts; part++) j->fn(j->arg, part, j->parts);
    free(extra);
    free(t);
}

/* Bind to the libgomp at `path` if, and only if, the process has already loaded it; 0 leaves
 * any earlier binding as it was. Nothing is ever unloaded, so a call still running on an
 * earlier binding stays valid. */
int pw_bind_openmp(const char *path) {
    void *h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    if (h == NULL) return 0;
    void *par = dlsym(h, "GOMP_parallel"), *num = dlsym(h, "omp_get_thread_num"),
         *team = dlsym(h, "omp_get_num_threads");
    if (par == NULL || num == NULL || team == NULL) {
        dlclose(h);
        return 0;
    }
    /* the handle is kept: the runtime must outlive the pointers */
    *(void **)&gomp_parallel = par;
    *(void **)&omp_thread_num = num;
    *(void **)&omp_num_threads = team;
    bound_pid = getpid();
    return 1;
}

int pw_openmp_bound(void) { return gomp_parallel != NULL; }

/* Bound, and in the process that bound (not a forked child). */
static int usable(void) { return gomp_parallel != NULL && bound_pid == getpid(); }

static void run(part_fn fn, void *arg, int parts, int all) {
    parts = pw_place(&caller, 0, parts, !all);  /* at most the caller's allowed CPUs */
    if (parts <= 1) {
        fn(arg, 0, 1);
        return;
    }
    cpu_set_t saved[MAX_THREADS];
    unsigned char bound[MAX_THREADS] = {0};
    omp_job j = {fn, arg, parts, all, sched_getcpu(), &caller, saved, bound};
    const long now = now_ns();
    if (now - last_region > IDLE_NS && j.cpu == caller.cpu)  /* caller.set is current */
        for (int k = 1; k < parts; k++)
            bound[k] = (unsigned char)pw_bind_helper(atomic_load(&caller.tid[k]), &caller.set,
                                                     j.cpu, k, &saved[k]);
    gomp_parallel(omp_body, &j, (unsigned)parts, 0);
    last_region = now_ns();
}

void pw_run_parts_openmp(part_fn fn, void *arg, int parts) {
    if (parts > MAX_THREADS) parts = MAX_THREADS;
    if (parts <= 1 || !usable() || pw_in_pool()) {
        pw_run_parts(fn, arg, parts);
        return;
    }
    run(fn, arg, parts, 0);
}

void pw_run_parts_openmp_all(part_fn fn, void *arg, int parts) {
    if (parts <= 1 || parts > MAX_THREADS || !usable() || pw_in_pool()) {
        pw_run_parts_all(fn, arg, parts);
        return;
    }
    run(fn, arg, parts, 1);
}
#endif
