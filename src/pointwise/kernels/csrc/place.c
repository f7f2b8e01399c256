/* Where helper threads run: each on a CPU of its own, never the caller's.
 *
 * Left to the scheduler, a helper woken by the caller is often placed on the caller's own
 * CPU (wake-affine placement), and two threads that are always busy (one computing, the
 * other spinning) look "cache hot" to the load balancer, which then takes milliseconds to
 * part them: the two halves of every call of a burst ran one after the other. Bursts of 15
 * calls after 0.3 s of idle (28x28 192->64, N=8, bias+ReLU, the pool unplaced): 7-13 of 16
 * rounds ran below 0.9x of the best round, down to 0.31x; in a traced run 8 of the 11 slow
 * rounds had the worker on the caller's CPU (the others: the host slowed both vCPUs).
 *
 * So before each job the caller places its helpers (pw_place): helper k is bound to the
 * k-th CPU of the caller's allowed set after the caller's current one, never the caller's
 * own. A helper bound while it sleeps wakes where it is bound; one bound while it spins on
 * the caller's CPU is moved at once. The caller itself is never bound (threads it starts
 * later would inherit its mask), and the binding is redone only when the caller's CPU or
 * allowed set changed. Compared in one process, round-robin, 16 rounds each (rounds with
 * the worker on the caller's CPU): unplaced 8, bound once at start 2 (the caller woke up on
 * the worker's CPU), placed before each job 0. A worker that moves itself when it finds the
 * caller's CPU first waits behind the caller for a scheduler slice (up to 7.3 ms seen).
 */
#include "pointwise.h"

#ifdef PW_X86
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* The allowed set is read again when the caller's CPU changed or SET_TTL_NS passed:
 * sched_getaffinity costs 0.64 us here, 6% of the smallest job the pool takes
 * (PARALLEL_MIN_MACS, ~10 us), sched_getcpu 3 ns. */
#define SET_TTL_NS 20000000L

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

void pw_place_reset(placement *pl) {
    for (int i = 0; i < MAX_THREADS; i++) atomic_store(&pl->tid[i], 0);
    pl->cpu = -1;
    pl->helpers = 0;
}

/* The k-th CPU of `set` after `cpu` (k >= 1), cyclically, never `cpu` itself. */
static int nth_after(const cpu_set_t *set, int cpu, int k) {
    int d = cpu;
    for (int step = 0; step < CPU_SETSIZE; step++) {
        d = (d + 1) % CPU_SETSIZE;
        if (d != cpu && CPU_ISSET(d, set) && --k == 0) return d;
    }
    return -1;
}

/* Whether thread `tid` is still one of this process's (a recorded id may have ended). */
static int ours(int tid) {
    return syscall(SYS_tgkill, getpid(), tid, 0) == 0;
}

int pw_place(placement *pl, int helpers, int parts, int clamp) {
    const int cpu = sched_getcpu();
    const long now = now_ns();
    if (cpu >= 0 && cpu == pl->cpu && pl->helpers == helpers && now - pl->at < SET_TTL_NS) {
        const int n = CPU_COUNT(&pl->set);
        return clamp && parts > n ? n : parts;
    }
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return parts;
    const int n = CPU_COUNT(&set);
    if (clamp && parts > n) parts = n;
    if (parts <= 1 || cpu < 0 || !CPU_ISSET(cpu, &set)) return parts;
    if (cpu == pl->cpu && pl->helpers == helpers && CPU_EQUAL(&set, &pl->set)) {
        pl->at = now;
        return parts;
    }
    pl->cpu = -1;
    for (int k = 1; k <= helpers && k < MAX_THREADS; k++) {
        const int tid = atomic_load(&pl->tid[k]);
        /* helpers beyond the other allowed CPUs get the whole set: they have no part at
         * this size, or the job needs more threads than CPUs (OpenBLAS's may) */
        const int d = k < n ? nth_after(&set, cpu, k) : -1;
        cpu_set_t one;
        CPU_ZERO(&one);
        if (d >= 0) CPU_SET(d, &one);
        /* a helper that has not yet told its id is placed by the next job */
        if (tid == 0 || !ours(tid) || sched_setaffinity(tid, sizeof one, d >= 0 ? &one : &set) != 0)
            return parts;
    }
    pl->cpu = cpu;
    pl->helpers = helpers;
    pl->set = set;
    pl->at = now;
    return parts;
}

int pw_bind_helper(int tid, const cpu_set_t *set, int cpu, int k, cpu_set_t *saved) {
    const int d = k < CPU_COUNT(set) ? nth_after(set, cpu, k) : -1;
    if (tid == 0 || d < 0 || !ours(tid) || sched_getaffinity(tid, sizeof *saved, saved) != 0)
        return 0;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(d, &one);
    return sched_setaffinity(tid, sizeof one, &one) == 0;
}

int pw_move_off(int cpu, const cpu_set_t *set) {
    if (sched_getcpu() != cpu || !CPU_ISSET(cpu, set) || CPU_COUNT(set) < 2) return 0;
    cpu_set_t other;
    memcpy(&other, set, sizeof other);
    CPU_CLR(cpu, &other);
    return sched_setaffinity(0, sizeof other, &other) == 0;
}
#endif
