/* The tail of a traced jitcache hit, in one C call: read the launch-done time, append the compact
 * record (head, t_enter, t_args, t_exit, thread) to the recorder's list.
 *
 * In Python that tail is a perf_counter_ns() call, a threading.get_ident() call, a capacity check
 * and a tuple append; one C call does the same with less interpreter work per traced launch. The
 * contract is recorder.py's `_append_hit_py` (the fallback where this does not build):
 *   append_hit(records: list, capacity: int, head, t_enter: int, t_args: int) -> int
 *   returns 0 once appended; when the list already holds `capacity` records it appends nothing and
 *   returns t_exit, so the caller can hand the record to Recorder.record_hit (flush or count a drop).
 * t_exit is CLOCK_MONOTONIC in ns: what time.perf_counter_ns() reads on Linux (checked at load).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <time.h>

/* The compact record's layout comes from jitlab/record_layout.py (c_defines(), passed by the build). */
#ifndef JL_REC_COMPACT_LEN
#error "built without the record layout: pass jitlab.record_layout.c_defines()"
#endif

static PyObject *now_ns(PyObject *self, PyObject *unused) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return PyLong_FromLongLong((long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
}

static PyObject *append_hit(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5 || !PyList_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "append_hit(records: list, capacity: int, head, t_enter, t_args)");
        return NULL;
    }
    Py_ssize_t capacity = PyLong_AsSsize_t(args[1]);
    if (capacity == -1 && PyErr_Occurred())
        return NULL;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    long long t_exit = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    if (PyList_GET_SIZE(args[0]) >= capacity)
        return PyLong_FromLongLong(t_exit);
    PyObject *rec = PyTuple_New(JL_REC_COMPACT_LEN);
    if (rec == NULL)
        return NULL;
    const int at[3] = {JL_REC_COMPACT_HEAD, JL_REC_COMPACT_T_ENTER, JL_REC_COMPACT_T_ARGS};
    for (int i = 0; i < 3; i++) {
        Py_INCREF(args[2 + i]);
        PyTuple_SET_ITEM(rec, at[i], args[2 + i]);
    }
    PyObject *exit_obj = PyLong_FromLongLong(t_exit);
    PyObject *thread = PyLong_FromUnsignedLong(PyThread_get_thread_ident());
    if (exit_obj == NULL || thread == NULL) {
        Py_XDECREF(exit_obj);
        Py_XDECREF(thread);
        Py_DECREF(rec);
        return NULL;
    }
    PyTuple_SET_ITEM(rec, JL_REC_COMPACT_T_EXIT, exit_obj);
    PyTuple_SET_ITEM(rec, JL_REC_COMPACT_THREAD, thread);
    int rc = PyList_Append(args[0], rec);
    Py_DECREF(rec);
    if (rc != 0)
        return NULL;
    return PyLong_FromLong(0);
}

static PyMethodDef methods[] = {
    {"append_hit", (PyCFunction)(void (*)(void))append_hit, METH_FASTCALL,
     "append_hit(records, capacity, head, t_enter, t_args) -> 0, or t_exit when the list is full."},
    {"now_ns", now_ns, METH_NOARGS, "CLOCK_MONOTONIC in ns (the clock append_hit stamps t_exit with)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_jitlab_hit_record", NULL, -1, methods};

PyMODINIT_FUNC PyInit__jitlab_hit_record(void) { return PyModule_Create(&mod); }
