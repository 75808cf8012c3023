/* The recorder's hit block, written from C and C++: one traced hit is a head stored into a preallocated
 * list slot and its numbers stored into a preallocated int64 array. Nothing is allocated, so a traced
 * hit creates no Python object and gives the garbage collector nothing to count or traverse.
 *
 * A block is the pair (heads: list of B slots, nums: int64 array of JL_HIT_HEADER_LEN + B * JL_HIT_STRIDE):
 * nums[JL_HIT_BLOCK_FILL] rows are written; row i's head is heads[i], its numbers start at
 * nums[JL_HIT_HEADER_LEN + i * JL_HIT_STRIDE]. The layout comes from jitlab/record_layout.py (c_defines(),
 * passed by every build that includes this header). Writers hold the GIL and run no Python code between
 * reading the fill and storing it, so a write is atomic with respect to every other writer and to the
 * taker (hit_record.c's take_hits); telemetry/recorder.py turns taken rows into tuples, off the hot path.
 * Included by telemetry/hit_record.c (the Python hit path's appender) and _triton/dispatch.cpp. */
#ifndef JITLAB_HIT_BLOCK_H
#define JITLAB_HIT_BLOCK_H
#include <Python.h>
#include <stdint.h>
#include <time.h>

#if !defined(JL_HIT_STRIDE) || !defined(JL_HIT_HEADER_LEN) || !defined(JL_HIT_BLOCK_FILL)
#error "built without the record layout: pass jitlab.record_layout.c_defines()"
#endif

/* The clock of every recorded time: CLOCK_MONOTONIC in ns, what time.perf_counter_ns() reads on Linux
 * (telemetry/recorder.py checks that at load). */
static inline long long jl_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Open the recorder's block `hits` = (heads: list, nums: array('q'), lock): 1 with *heads (borrowed) and
 * *view held (release it), or 0 with a TypeError set (or the buffer error). */
static inline int jl_hit_open(PyObject *hits, PyObject **heads, Py_buffer *view) {
  if (!PyTuple_Check(hits) || PyTuple_GET_SIZE(hits) < 2 || !PyList_CheckExact(PyTuple_GET_ITEM(hits, 0))) {
    PyErr_SetString(PyExc_TypeError, "hits must be the recorder's (heads: list, nums: array('q'), lock)");
    return 0;
  }
  *heads = PyTuple_GET_ITEM(hits, 0);
  if (PyObject_GetBuffer(PyTuple_GET_ITEM(hits, 1), view, PyBUF_WRITABLE | PyBUF_FORMAT) < 0) return 0;
  Py_ssize_t need = (JL_HIT_HEADER_LEN + PyList_GET_SIZE(*heads) * JL_HIT_STRIDE) * (Py_ssize_t)sizeof(int64_t);
  if (view->itemsize != sizeof(int64_t) || view->len != need) {
    PyBuffer_Release(view);
    PyErr_SetString(PyExc_TypeError, "hits: nums must be an int64 array sized for the heads list");
    return 0;
  }
  return 1;
}

/* Store one hit as row nums[fill]; 1, or 0 when the block is full (nothing written). `heads` must be an
 * exact list of `rows` slots and `nums` hold JL_HIT_HEADER_LEN + rows * JL_HIT_STRIDE int64s. */
static inline int jl_hit_write(PyObject *heads, int64_t *nums, Py_ssize_t rows, PyObject *head, long long t_enter,
                               long long t_args, long long t_exit, unsigned long thread) {
  int64_t fill = nums[JL_HIT_BLOCK_FILL];
  if (fill < 0 || fill >= rows) return 0;
  int64_t *row = nums + JL_HIT_HEADER_LEN + fill * JL_HIT_STRIDE;
  row[JL_HIT_T_ENTER] = t_enter;
  row[JL_HIT_T_ARGS] = t_args;
  row[JL_HIT_T_EXIT] = t_exit;
  row[JL_HIT_THREAD] = (int64_t)thread;
  PyObject *old = PyList_GET_ITEM(heads, fill);
  PyList_SET_ITEM(heads, fill, Py_NewRef(head));
  nums[JL_HIT_BLOCK_FILL] = fill + 1;
  /* last: a head left from an earlier row; heads are tuples of str and int, whose release runs no Python */
  Py_XDECREF(old);
  return 1;
}

#endif
