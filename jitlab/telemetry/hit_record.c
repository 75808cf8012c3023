/* The tail of a traced jitcache hit for the Python hit path, in one C call, and the taker of the hit
 * block both hit paths write (jitlab/hit_block.h).
 *
 *   append_hit(hits, head, t_enter: int, t_args: int) -> int
 *     hits = the recorder's (heads: list, nums: array('q'), lock). Stamps t_exit and writes the row;
 *     returns 0 once written. When the block is full it writes nothing and returns t_exit, so the
 *     caller can hand the hit to Recorder.record_hit (which takes the block, then flushes or counts a
 *     drop). The contract of recorder.py's `_append_hit_py`, the fallback where this does not build.
 *   take_hits(hits) -> None | (heads: list, rows: bytes)
 *     The rows written so far, copied out, and the block emptied, in one step no writer can enter.
 *   now_ns() -> int
 *
 * t_exit is CLOCK_MONOTONIC in ns: what time.perf_counter_ns() reads on Linux (checked at load).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "hit_block.h"

static PyObject *now_ns(PyObject *self, PyObject *unused) { return PyLong_FromLongLong(jl_now_ns()); }

static PyObject *append_hit(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
  if (nargs != 4) {
    PyErr_SetString(PyExc_TypeError, "append_hit(hits, head, t_enter, t_args)");
    return NULL;
  }
  long long t_enter = PyLong_AsLongLong(args[2]), t_args = PyLong_AsLongLong(args[3]);
  if (PyErr_Occurred()) return NULL;
  PyObject *heads;
  Py_buffer view;
  if (!jl_hit_open(args[0], &heads, &view)) return NULL;
  long long t_exit = jl_now_ns();
  int written = jl_hit_write(heads, (int64_t *)view.buf, PyList_GET_SIZE(heads), args[1], t_enter, t_args, t_exit,
                             PyThread_get_thread_ident());
  PyBuffer_Release(&view);
  return PyLong_FromLongLong(written ? 0 : t_exit);
}

static PyObject *take_hits(PyObject *self, PyObject *hits) {
  PyObject *heads;
  Py_buffer view;
  if (!jl_hit_open(hits, &heads, &view)) return NULL;
  int64_t *nums = (int64_t *)view.buf;
  PyObject *result = NULL;
  for (;;) {
    Py_ssize_t n = (Py_ssize_t)nums[JL_HIT_BLOCK_FILL];
    if (n <= 0) {
      result = Py_NewRef(Py_None);
      break;
    }
    /* everything the result needs, allocated before the block is read */
    PyObject *out_heads = PyList_New(n), *result_pair = PyTuple_New(2);
    PyObject *rows = PyBytes_FromStringAndSize(NULL, n * JL_HIT_STRIDE * (Py_ssize_t)sizeof(int64_t));
    if (!out_heads || !result_pair || !rows) {
      Py_XDECREF(out_heads); Py_XDECREF(result_pair); Py_XDECREF(rows);
      break;
    }
    /* An allocation may have run a collection, and a finalizer may have let another thread write: then
     * the copy is of a block that moved on; take again. From here on nothing runs Python code. */
    if (nums[JL_HIT_BLOCK_FILL] != n) {
      Py_DECREF(out_heads); Py_DECREF(result_pair); Py_DECREF(rows);
      continue;
    }
    memcpy(PyBytes_AS_STRING(rows), nums + JL_HIT_HEADER_LEN, n * JL_HIT_STRIDE * sizeof(int64_t));
    for (Py_ssize_t i = 0; i < n; i++) PyList_SET_ITEM(out_heads, i, Py_NewRef(PyList_GET_ITEM(heads, i)));
    nums[JL_HIT_BLOCK_FILL] = 0;
    PyTuple_SET_ITEM(result_pair, 0, out_heads);
    PyTuple_SET_ITEM(result_pair, 1, rows);
    result = result_pair;
    break;
  }
  PyBuffer_Release(&view);
  return result;
}

static PyMethodDef methods[] = {
    {"append_hit", (PyCFunction)(void (*)(void))append_hit, METH_FASTCALL,
     "append_hit(hits, head, t_enter, t_args) -> 0, or t_exit when the block is full (nothing written)."},
    {"take_hits", take_hits, METH_O, "take_hits(hits) -> None | (heads, rows): the rows written, the block emptied."},
    {"now_ns", now_ns, METH_NOARGS, "CLOCK_MONOTONIC in ns (the clock append_hit stamps t_exit with)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_jitlab_hit_record", NULL, -1, methods};

PyMODINIT_FUNC PyInit__jitlab_hit_record(void) { return PyModule_Create(&mod); }
