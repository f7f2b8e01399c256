/* Running a job on the host's OpenMP team instead of the kernels' own pool.
 *
 * Inside a torch model our pool and torch's OpenMP team take turns on the same cores, and
 * each spins for a while after its own work: every hand-over then runs two busy threads per
 * core. (A converted ResNet-50 ran 568 ms against 424 ms on torch alone.) So a caller that
 * already has libgomp loaded, torch, may bind to it (openmp()) and run a call's parts on that
 * very team, whose threads are the ones still spinning from the previous layer. GOMP_parallel
 * is the entry point GCC emits for `#pragma omp parallel`; it is stable across libgomp
 * versions since GCC 4.9. */
#include "pointwise.h"

#ifdef PW_X86
#include <dlfcn.h>

static void (*gomp_parallel)(void (*)(void *), void *, unsigned, unsigned);
static int (*omp_thread_num)(void);
static int (*omp_num_threads)(void);

typedef struct { part_fn fn; void *arg; int parts; } omp_job;

static void omp_body(void *p) {
    const omp_job *j = p;
    const int team = omp_num_threads();
    for (int part = omp_thread_num(); part < j->parts; part += team) j->fn(j->arg, part, j->parts);
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
    return 1;
}

void pw_run_parts_openmp(part_fn fn, void *arg, int parts) {
    if (parts <= 1 || gomp_parallel == NULL) {
        pw_run_parts(fn, arg, parts);
        return;
    }
    omp_job j = {fn, arg, parts};
    gomp_parallel(omp_body, &j, (unsigned)parts, 0);
}

int pw_openmp_bound(void) { return gomp_parallel != NULL; }
#endif
