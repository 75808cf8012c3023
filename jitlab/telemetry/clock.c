/* The CPU's own counter, read without a system call: the tracing clock of jitlab's hit path.
 *
 * time.perf_counter_ns() costs ~100 ns per call on the H200 host (a Firecracker microVM), about
 * 75 ns of it in clock_gettime; a full-level trace takes three timestamps per launch. Reading
 * the counter directly (x86-64 TSC, arm64 CNTVCT_EL0) costs a plain C call. clock.py only picks
 * this clock where the kernel itself trusts the counter as its clocksource (so it is invariant
 * and synchronised across cores), and converts ticks to perf_counter_ns with `pair()` samples.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <time.h>

#if defined(__x86_64__)
#include <x86intrin.h>
static inline uint64_t counter(void) { return __rdtsc(); }
#elif defined(__aarch64__)
static inline uint64_t counter(void) {
    uint64_t v;
    __asm__ __volatile__("isb; mrs %0, cntvct_el0" : "=r"(v));
    return v;
}
#else
#error "no user-readable CPU counter on this architecture: jitlab uses perf_counter_ns"
#endif

static PyObject *ticks(PyObject *self, PyObject *unused) {
    return PyLong_FromUnsignedLongLong(counter());
}

/* (ticks, CLOCK_MONOTONIC ns, ticks spent reading): the counter read on both sides of one
   clock_gettime, for converting ticks to time.perf_counter_ns() (which is CLOCK_MONOTONIC). */
static PyObject *pair(PyObject *self, PyObject *unused) {
    struct timespec ts;
    uint64_t a = counter();
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t b = counter();
    long long ns = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    return Py_BuildValue("(KLK)", (unsigned long long)(a + (b - a) / 2), ns, (unsigned long long)(b - a));
}

static PyMethodDef methods[] = {
    {"ticks", ticks, METH_NOARGS, "The CPU counter (x86-64 TSC / arm64 CNTVCT_EL0)."},
    {"pair", pair, METH_NOARGS, "(ticks, CLOCK_MONOTONIC ns, read width in ticks), read back to back."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_jitlab_clock", NULL, -1, methods};

PyMODINIT_FUNC PyInit__jitlab_clock(void) { return PyModule_Create(&mod); }
