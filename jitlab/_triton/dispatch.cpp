/* jitlab's native dispatcher: `kernel[grid](...)` in one C call on a cache hit.
 *
 * A Dispatcher is made per kernel and policy (jitlab/cache.py). Called as dispatcher(grid, *args,
 * **kwargs), it binds the arguments to the kernel's parameters (keywords matched by interned name),
 * computes jitlab's key exactly as the generated Python hit path does (native_key.h, with tensor
 * dtype and address read through torch's C++ API instead of Python method calls), finds the entry in
 * the same per-scope table, and launches it (native_launcher.h), with no Python frame.
 *
 * A traced hit records in C as the generated hit path does (a row of the recorder's hit block,
 * jitlab/hit_block.h, on the same clock).
 * Anything else leaves through `slow`, the generated Python hit path (codegen.py), called with the
 * original arguments: a miss, a fallback, verify on, hooks set, a kernel that read globals, a
 * callable grid, an argument binding it does not handle. So the Python path stays the
 * reference implementation, and the dispatcher only ever takes the path it would take on a plain hit.
 *
 * Built on first use with the host C++ compiler against the installed torch (jitlab/_cbuild.py). The bench
 * builds it a second time with -DJITLAB_BENCH_STOPS, as the module _jitlab_dispatch_bench: only that build
 * has the stage stops and A/B variants jitlab.bench.launch_parts times (set_stop, set_ab); the shipping
 * dispatcher has neither. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <torch/csrc/DynamicTypes.h>
#include <torch/csrc/autograd/python_variable.h>

#include <stdint.h>
#include <time.h>

#include "hit_block.h"

/* The address of a CUDA torch.Tensor: 1 (in *p), 0 when `o` is anything else (the generic path
 * decides), -1 on error. Triton's launcher asks data_ptr() and cuPointerGetAttribute; for a CUDA
 * tensor jitlab's C launcher skips the latter (native_launcher.h) and this skips the former. */
static int torch_cuda_pointer(PyObject *o, uint64_t *p) {
  if (!THPVariable_CheckExact(o)) return 0;
  try {
    const at::Tensor &t = THPVariable_Unpack(o);
    if (!t.has_storage() || !t.is_cuda()) return 0;
    *p = (uint64_t)(uintptr_t)t.data_ptr();
    return 1;
  } catch (...) {
    return 0; /* e.g. a tensor without data: the generic path raises what Triton raises */
  }
}

/* keys.spec's tensor item `(dtype, aligned)` without a Python call; NULL (no error set) defers to
 * the generic path, which reads `.dtype` and `data_ptr()` like keys.spec. */
static PyObject *torch_key_item(PyObject *o, int align) {
  if (!THPVariable_CheckExact(o)) return NULL;
  try {
    const at::Tensor &t = THPVariable_Unpack(o);
    PyObject *dtype = (PyObject *)torch::getTHPDtype(t.scalar_type());
    int aligned = 1;
    if (align) {
      if (!t.has_storage()) return NULL;
      aligned = !((uintptr_t)t.data_ptr() & 15);
    }
    return PyTuple_Pack(2, dtype, aligned ? Py_True : Py_False);
  } catch (...) {
    return NULL;
  }
}

/* keys.spec's tensor item compared with `want` in place: 1 equal, 0 not, -2 not a case for this. */
static int torch_item_equals(PyObject *o, int align, PyObject *want) {
  if (!THPVariable_CheckExact(o) || !PyTuple_CheckExact(want) || PyTuple_GET_SIZE(want) != 2) return -2;
  try {
    const at::Tensor &t = THPVariable_Unpack(o);
    if (PyTuple_GET_ITEM(want, 0) != (PyObject *)torch::getTHPDtype(t.scalar_type())) return 0;
    int aligned = 1;
    if (align) {
      if (!t.has_storage()) return -2;
      aligned = !((uintptr_t)t.data_ptr() & 15);
    }
    return PyTuple_GET_ITEM(want, 1) == (aligned ? Py_True : Py_False);
  } catch (...) {
    return -2;
  }
}

#define JITLAB_TORCH 1
#include "native_launcher.h"
#include "native_key.h"

#define MAX_OPTIONS 16
#define MAX_STATE 8

/* One read of Triton state (adapter.StateItem.reads/op): the value is op(getattr(obj, attr)[, ...]). */
typedef struct {
  PyObject *obj, *attr, *obj2, *attr2;
  char op; /* 'v' value, 'n' not value, 'o' value or value2, 'z' value is None */
} StateRead;

/* The entry the last hit found, with what a hit reads from it: the next call with the same key (the
 * common case: a decode loop) is compared item by item with `key`, with no tuple built or hashed.
 * A table whose entries shrink is replaced (a cleared scope drops its whole table; an eviction puts a
 * copy in its place: cache.JitCache._evict), so while `table` is still this scope's table, `entry` is valid. */
typedef struct {
  PyObject *scope, *table, *key, *entry, *launch, *device, *hits, *head;
  int32_t grid[3];
  int has_grid, verify;
} LastHit;

/* The active recorder's parts the traced hit path uses, read once per recorder: its hit block (heads list
 * and int64 array, never replaced: the recorder takes rows out in place) when C may write it (c_hits),
 * every_hit (fixed), and its sampling state [offered, tick, sample_every], an int64 array read and
 * updated in place (a recorder may change its rate for a while: Recorder.keeping_every_hit). */
typedef struct {
  PyObject *rec, *heads; /* heads: NULL where the recorder's block is not written from C */
  Py_buffer nums;        /* the block's int64s; .obj NULL unless heads */
  int every_hit;
  Py_buffer sampling; /* .obj NULL until viewed */
} RecorderView;

#ifdef JITLAB_BENCH_STOPS
#define DISPATCH_MODULE "_jitlab_dispatch_bench"
#define DISPATCH_INIT PyInit__jitlab_dispatch_bench
/* Where a hit stops when the bench asks what its parts cost (native.STAGES, set_stop; STOP_NONE: a whole
 * launch). A stop returns None as a hit does, having done every stage up to and including its own: bind
 * the arguments; find the entry (Triton state, device, scope, key compared); the checks (used globals,
 * verify, hooks, grid); count the hit and read the stream; convert the arguments into the parameter
 * buffer (no driver call). `ab`: the A/B variants of the launch (AB_*, native_launcher.h). */
enum { STOP_NONE, STOP_BIND, STOP_KEY, STOP_CHECKS, STOP_PREP, STOP_PACK, STOP_LAST = STOP_PACK };
typedef struct {
  int stop, ab;
  PyObject *stream; /* AB_STREAM_ONCE: the first stream read */
} BenchState;
#define BENCH_STOP(stage, value) \
  if (d->bench.stop == (stage)) { rc = (value); goto done; }
#else /* the shipping dispatcher: no stops */
#define DISPATCH_MODULE "_jitlab_dispatch"
#define DISPATCH_INIT PyInit__jitlab_dispatch
#define BENCH_STOP(stage, value)
#endif

/* Callable grids. Triton calls grid(bound_args), a fresh dict of every bound argument. Most grids only read
 * a few of its items by constant name (`meta["BLOCK"]`, `meta.get("BLOCK")`, `"BLOCK" in meta`); for such a
 * grid a dict of just the items it reads cannot be told from Triton's (the same objects under the same
 * names, a missing name the same KeyError) and costs a fraction of the whole dict. Which names a grid
 * function reads, and that it does nothing else with its argument, is proven from its bytecode once per
 * code object by jitlab._triton.gridmeta.reads (registered with set_grid_reads); a grid it cannot prove
 * that for (or any other callable) gets the whole dict. So does every grid while a trace or profile
 * function is set (a debugger sees the grid's locals); and when a grid raises, the dict its frame holds
 * is filled to Triton's before the error leaves. */
#define GRID_CODES 4 /* code objects remembered per dispatcher */
#define GRID_READS 8 /* at most this many names read: more get the whole dict */
#ifdef JITLAB_BENCH_STOPS
/* AB_GRID_CACHE (bench build only, not yet measured on a GPU): a pure grid's last result, reused while the
 * values it depends on are the same. gridmeta.purity proves from the bytecode what a grid's result can
 * depend on: the items it reads, its closure cells and the global chains it loads (a name, then attributes
 * of modules); each launch checks that every chain resolves to a pure callable (gridmeta.pure_callables)
 * or to an int, bool or None, and that every value read and every cell is an int, bool or None. The key is
 * those values (type and value); a grid that is not proven pure, or a value outside those types, is called. */
#define GRID_KEYS (GRID_READS + 16) /* values read + cells + int-valued chains (gridmeta.MAX_CELLS, MAX_CHAINS) */
typedef struct {
  int pure;        /* -1: not analysed yet, 0: not pure, 1: pure (chains, ncells) */
  PyObject *chains; /* tuple of tuples of str */
  int ncells;
  PyObject *memo[GRID_KEYS]; /* the last key (strong), memo_n items; -1: none */
  int memo_n;
  int32_t memo_g[3];
} GridMemo;
static PyObject *grid_purity_fn, *grid_pure_callables; /* gridmeta.purity, gridmeta.pure_callables() */
#endif
typedef struct {
  PyObject *code; /* strong (so its address is not reused); NULL: a free slot */
  int n;          /* names read, -1: the whole dict */
  int16_t idx[GRID_READS]; /* their parameter positions (a name the kernel lacks is left out: KeyError) */
#ifdef JITLAB_BENCH_STOPS
  GridMemo memo;
#endif
} GridReads;
static PyObject *grid_reads_fn; /* gridmeta.reads(code) -> tuple of names, or None */

typedef struct {
  PyObject_HEAD
  vectorcallfunc vectorcall;
#ifdef JITLAB_BENCH_STOPS
  BenchState bench;
#endif
  LastHit last;
  GridReads grid_reads[GRID_CODES];
  int grid_next; /* the slot the next new code object takes */
  RecorderView rv;
  Py_ssize_t n, npositional; /* parameters; how many may be given positionally */
  PyObject *names[MAX_PARAMS], *defaults[MAX_PARAMS]; /* interned names; NULL: required */
  PyObject *index; /* {name: position}: keywords that are not the interned objects (and launch options) */
  Keyer *keyer;
  int nstate;
  StateRead state[MAX_STATE];
  PyObject *device;     /* an int (one visible device) or a callable returning it */
  PyObject *get_stream; /* callable(device) -> raw stream */
  PyObject *hook_holder, *hook_chain; /* where launch hooks live; HookChain type or None */
  PyObject *active;     /* telemetry.recorder.ACTIVE: tracing goes through the Python path */
  PyObject *scope_var;  /* the current-scope ContextVar */
  PyObject *tables;     /* {Scope: Table} of this kernel */
  PyObject *fn;         /* the JITFunction (its used_global_vals) */
  PyObject *slow;       /* the generated Python hit path */
  PyObject *empty;      /* () */
} Dispatcher;

static PyObject *s_hits_attr, *s_c_hits, *s_head, *s_every_hit, *s_sampling, *s_recorder, *s_entries, *s_hits, *s_used_global_vals, *s_verify, *s_grid, *s_device, *s_launch,
    *s_enter, *s_exit, *s_calls, *s_used;

static void decref_all(PyObject **objs, int n) {
  for (int i = 0; i < n; i++) Py_XDECREF(objs[i]);
}

/* 1 when no launch hook is set (Triton's None, or an empty 3.5+ HookChain), 0 when one is, -1 on error. */
static int no_hooks(Dispatcher *d) {
  PyObject *names[2] = {s_enter, s_exit};
  for (int i = 0; i < 2; i++) {
    PyObject *h = PyObject_GetAttr(d->hook_holder, names[i]);
    if (!h) return -1;
    int empty = h == Py_None;
    if (!empty && (PyObject *)Py_TYPE(h) == d->hook_chain) {
      PyObject *calls = PyObject_GetAttr(h, s_calls);
      empty = calls && PyList_Check(calls) && PyList_GET_SIZE(calls) == 0;
      Py_XDECREF(calls);
    }
    Py_DECREF(h);
    if (!empty) return PyErr_Occurred() ? -1 : 0;
  }
  return 1;
}

/* The value of one state read (a new reference), as the generated hit path computes it. */
static PyObject *read_state(const StateRead *s) {
  PyObject *v = PyObject_GetAttr(s->obj, s->attr);
  if (!v) return NULL;
  switch (s->op) {
  case 'v': return v;
  case 'z': Py_DECREF(v); return Py_NewRef(v == Py_None ? Py_True : Py_False);
  case 'n': {
    int t = PyObject_IsTrue(v);
    Py_DECREF(v);
    return t < 0 ? NULL : Py_NewRef(t ? Py_False : Py_True);
  }
  case 'o': {
    int t = PyObject_IsTrue(v);
    if (t) return t < 0 ? (Py_DECREF(v), (PyObject *)NULL) : v;
    Py_DECREF(v);
    return PyObject_GetAttr(s->obj2, s->attr2);
  }
  }
  Py_DECREF(v);
  return PyErr_Format(PyExc_ValueError, "bad state op %c", s->op);
}

/* Triton's dict for a callable grid: every bound argument under its name, in parameter order. 0, or -1. */
static int fill_meta(Dispatcher *d, PyObject *meta, PyObject *const *vals) {
  for (Py_ssize_t j = 0; j < d->n; j++)
    if (PyDict_SetItem(meta, d->names[j], vals[j]) < 0) return -1;
  return 0;
}

#ifdef JITLAB_BENCH_STOPS
static void forget_memo(GridMemo *m) {
  for (int i = 0; i < m->memo_n; i++) Py_CLEAR(m->memo[i]);
  Py_CLEAR(m->chains);
  m->memo_n = -1, m->pure = -1, m->ncells = 0;
}
#endif

/* The parameter positions a grid function reads (into idx), or -1 for the whole dict (see GridReads);
 * *at: its slot (NULL when none). */
static int grid_reads_of(Dispatcher *d, PyObject *grid, int16_t idx[GRID_READS], GridReads **at) {
  *at = NULL;
  if (!grid_reads_fn || !PyFunction_Check(grid)) return -1;
  PyObject *code = PyFunction_GET_CODE(grid);
  for (int i = 0; i < GRID_CODES; i++)
    if (d->grid_reads[i].code == code) {
      memcpy(idx, d->grid_reads[i].idx, sizeof d->grid_reads[i].idx);
      *at = &d->grid_reads[i];
      return d->grid_reads[i].n;
    }
  Py_INCREF(code); /* the analysis runs Python code: the function's code may be replaced meanwhile */
  PyObject *names = PyObject_CallOneArg(grid_reads_fn, code);
  int n = -1;
  if (names && PyTuple_Check(names) && PyTuple_GET_SIZE(names) <= GRID_READS) {
    n = 0;
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(names) && n >= 0; k++) {
      PyObject *pos = PyUnicode_Check(PyTuple_GET_ITEM(names, k)) ? PyDict_GetItemWithError(d->index, PyTuple_GET_ITEM(names, k)) : NULL;
      if (pos) idx[n++] = (int16_t)PyLong_AsSsize_t(pos);
      else if (PyErr_Occurred() || !PyUnicode_Check(PyTuple_GET_ITEM(names, k))) n = -1;
    }
  }
  Py_XDECREF(names);
  if (PyErr_Occurred()) PyErr_Clear(), n = -1; /* an analysis that failed proves nothing: the whole dict */
  GridReads *slot = &d->grid_reads[d->grid_next];
  d->grid_next = (d->grid_next + 1) % GRID_CODES;
  PyObject *old = slot->code;
  slot->code = code; /* the reference taken above */
  slot->n = n;
  if (n > 0) memcpy(slot->idx, idx, sizeof slot->idx);
#ifdef JITLAB_BENCH_STOPS
  forget_memo(&slot->memo);
#endif
  *at = slot;
  Py_XDECREF(old);
  return n;
}

#ifdef JITLAB_BENCH_STOPS
static int memo_value(PyObject *v) { return v == Py_None || PyBool_Check(v) || PyLong_CheckExact(v); }

/* The key of a pure grid's call into key[] (new references): 1, or 0 when this call cannot be memoised
 * (not proven pure, a value of another type, a chain that resolves to something else; no error set). */
static int grid_key(GridReads *slot, PyObject *grid, PyObject *const *vals, int nread, const int16_t *idx,
                    PyObject **key, int *nkey) {
  GridMemo *m = &slot->memo;
  *nkey = 0;
  if (m->pure < 0) { /* analyse once per slot (Python code: may run anything, so the slot is re-read) */
    PyObject *code = Py_NewRef(slot->code);
    PyObject *r = grid_purity_fn ? PyObject_CallOneArg(grid_purity_fn, code) : NULL;
    int ok = r && PyTuple_Check(r) && PyTuple_GET_SIZE(r) == 2 && PyTuple_Check(PyTuple_GET_ITEM(r, 0)) &&
             PyLong_Check(PyTuple_GET_ITEM(r, 1)) && slot->code == code && m->pure < 0;
    if (ok) {
      m->chains = Py_NewRef(PyTuple_GET_ITEM(r, 0));
      m->ncells = (int)PyLong_AsLong(PyTuple_GET_ITEM(r, 1));
      ok = m->ncells >= 0 && nread + m->ncells + PyTuple_GET_SIZE(m->chains) <= GRID_KEYS;
    }
    if (PyErr_Occurred()) PyErr_Clear(), ok = 0;
    if (slot->code == code) m->pure = ok;
    Py_XDECREF(r);
    Py_DECREF(code);
    if (!ok) return 0;
  }
  if (m->pure != 1) return 0;
  for (int i = 0; i < nread; i++) {
    if (!memo_value(vals[idx[i]])) goto no;
    key[(*nkey)++] = Py_NewRef(vals[idx[i]]);
  }
  {
    PyObject *cl = PyFunction_GET_CLOSURE(grid);
    Py_ssize_t ncl = cl ? PyTuple_GET_SIZE(cl) : 0;
    if (ncl != m->ncells) goto no;
    for (Py_ssize_t k = 0; k < ncl; k++) {
      PyObject *v = PyCell_GET(PyTuple_GET_ITEM(cl, k));
      if (!v || !memo_value(v)) goto no;
      key[(*nkey)++] = Py_NewRef(v);
    }
  }
  {
    PyObject *globals = PyFunction_GET_GLOBALS(grid), *builtins = ((PyFunctionObject *)grid)->func_builtins;
    for (Py_ssize_t c = 0; c < PyTuple_GET_SIZE(m->chains); c++) {
      PyObject *chain = PyTuple_GET_ITEM(m->chains, c);
      PyObject *o = PyDict_GetItemWithError(globals, PyTuple_GET_ITEM(chain, 0));
      if (!o && !PyErr_Occurred() && builtins && PyDict_Check(builtins))
        o = PyDict_GetItemWithError(builtins, PyTuple_GET_ITEM(chain, 0));
      if (!o) goto no;
      Py_INCREF(o);
      for (Py_ssize_t a = 1; a < PyTuple_GET_SIZE(chain); a++) { /* attributes of modules only */
        PyObject *next = PyModule_CheckExact(o) ? PyObject_GetAttr(o, PyTuple_GET_ITEM(chain, a)) : NULL;
        Py_DECREF(o);
        if (!(o = next)) goto no;
      }
      if (memo_value(o)) { key[(*nkey)++] = o; continue; } /* an int global: part of the key */
      int pure = 0; /* by identity: hashing may run Python code (Triton's JITCallable hashes its cache_key) */
      for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(grid_pure_callables) && !pure; k++)
        pure = PyTuple_GET_ITEM(grid_pure_callables, k) == o;
      Py_DECREF(o);
      if (!pure) goto no;
    }
  }
  return 1;
no:
  if (PyErr_Occurred()) PyErr_Clear();
  for (int i = 0; i < *nkey; i++) Py_DECREF(key[i]);
  *nkey = 0;
  return 0;
}

/* 1 when key[] is the memo's key (same types, equal values). */
static int memo_matches(const GridMemo *m, PyObject *const *key, int nkey) {
  if (m->memo_n != nkey) return 0;
  for (int i = 0; i < nkey; i++) {
    if (m->memo[i] == key[i]) continue;
    if (Py_TYPE(m->memo[i]) != Py_TYPE(key[i])) return 0;
    int eq = PyObject_RichCompareBool(m->memo[i], key[i], Py_EQ); /* ints: no Python code */
    if (eq != 1) { if (eq < 0) PyErr_Clear(); return 0; }
  }
  return 1;
}
#endif

/* A grid tuple/list of 1-3 ints -> g[3] (1 where absent), as the hit path reads it; 0 if not one. */
static int grid_dims(PyObject *grid, int32_t g[3]) {
  if (!PyTuple_CheckExact(grid) && !PyList_CheckExact(grid)) return 0;
  Py_ssize_t n = PySequence_Fast_GET_SIZE(grid);
  if (n < 1 || n > 3) return 0;
  PyObject **items = PySequence_Fast_ITEMS(grid);
  g[1] = g[2] = 1;
  for (Py_ssize_t i = 0; i < n; i++) {
    if (!PyLong_CheckExact(items[i])) return 0;
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(items[i], &overflow);
    if (overflow || v < INT32_MIN || v > INT32_MAX) return 0; /* the launcher's OverflowError: slow path */
    g[i] = (int32_t)v;
  }
  return 1;
}

/* Triton's check on every launch: `globals_dict.get(name, not_present) != val` for each global the kernel
 * read (no identity shortcut: a NaN global is "changed", as in Triton). 1 changed, 0 not, -1 error. */
static int globals_changed(PyObject *used) {
  if (!PyDict_Check(used)) return 1;
  Py_ssize_t pos = 0;
  PyObject *key, *value;
  while (PyDict_Next(used, &pos, &key, &value)) {
    if (!PyTuple_Check(key) || PyTuple_GET_SIZE(key) < 1 || !PyTuple_Check(value) || PyTuple_GET_SIZE(value) != 2 ||
        !PyDict_Check(PyTuple_GET_ITEM(value, 1)))
      return 1; /* an unknown layout: let the Python path (and Triton) decide */
    PyObject *now = PyDict_GetItemWithError(PyTuple_GET_ITEM(value, 1), PyTuple_GET_ITEM(key, 0));
    if (!now) return PyErr_Occurred() ? -1 : 1;
    PyObject *ne = PyObject_RichCompare(now, PyTuple_GET_ITEM(value, 0), Py_NE);
    int r = ne ? PyObject_IsTrue(ne) : -1;
    Py_XDECREF(ne);
    if (r) return r;
  }
  return 0;
}

/* A hit whose callable grid raised: counted (and its entry's `used` stamped) as the Python path counts
 * it, which finds the entry and counts the hit before it calls the grid; the grid's error stays set. */
static void count_hit_keeping_error(PyObject *hits, PyObject *entry) {
  PyObject *type, *value, *tb;
  PyErr_Fetch(&type, &value, &tb);
  PyObject *count = PyIter_Next(hits);
  if (count && PyObject_SetAttr(entry, s_used, count) < 0) PyErr_Clear();
  Py_XDECREF(count);
  PyErr_Restore(type, value, tb);
}

/* grid(dict of the bound arguments) -> g[3]: 1, 0 when the result is not a grid it reads (slow path), -1 error. */
static int call_grid(Dispatcher *d, PyObject *grid, PyObject *const *vals, int32_t g[3]) {
  if (!PyCallable_Check(grid)) return 0;
  /* the dict: Triton's whole dict, or the items of it the grid reads (GridReads) */
  int16_t idx[GRID_READS];
  GridReads *slot;
  int nread = grid_reads_of(d, grid, idx, &slot);
#ifdef JITLAB_BENCH_STOPS
  if (d->bench.ab & AB_GRID_WHOLE_DICT) nread = -1;
#endif
  if (nread >= 0) {
    PyThreadState *ts = PyThreadState_Get();
    if (ts->c_tracefunc || ts->c_profilefunc) nread = -1;
  }
#ifdef JITLAB_BENCH_STOPS
  PyObject *key[GRID_KEYS];
  int nkey = 0, memoise = (d->bench.ab & AB_GRID_CACHE) && nread >= 0 && slot &&
                          grid_key(slot, grid, vals, nread, idx, key, &nkey);
  if (memoise && (slot->code != PyFunction_GET_CODE(grid))) { /* the analysis ran Python code: re-check */
    for (int i = 0; i < nkey; i++) Py_DECREF(key[i]);
    memoise = 0, nkey = 0;
  }
  if (memoise && memo_matches(&slot->memo, key, nkey)) {
    memcpy(g, slot->memo.memo_g, sizeof slot->memo.memo_g);
    for (int i = 0; i < nkey; i++) Py_DECREF(key[i]);
    return 1;
  }
#endif
  PyObject *meta = PyDict_New(), *r = NULL;
  int rc = -1;
  if (!meta) {
#ifdef JITLAB_BENCH_STOPS
    for (int i = 0; i < nkey; i++) Py_DECREF(key[i]);
#endif
    return -1;
  }
  if (nread < 0) {
    if (fill_meta(d, meta, vals) < 0) goto done;
  } else {
    for (int i = 0; i < nread; i++)
      if (PyDict_SetItem(meta, d->names[idx[i]], vals[idx[i]]) < 0) goto done;
  }
  if ((r = PyObject_CallOneArg(grid, meta))) {
    rc = grid_dims(r, g);
  } else if (nread >= 0) { /* the traceback holds the grid's frame, and so `meta`: make it Triton's dict */
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyDict_Clear(meta);
    if (fill_meta(d, meta, vals) < 0) PyErr_Clear();
    PyErr_Restore(type, value, tb);
  }
done:
  Py_DECREF(meta);
  Py_XDECREF(r);
#ifdef JITLAB_BENCH_STOPS
  if (memoise && rc == 1 && slot->code == PyFunction_GET_CODE(grid)) { /* the key's references move in */
    for (int i = 0; i < slot->memo.memo_n; i++) Py_CLEAR(slot->memo.memo[i]);
    memcpy(slot->memo.memo, key, nkey * sizeof key[0]);
    slot->memo.memo_n = nkey;
    memcpy(slot->memo.memo_g, g, sizeof slot->memo.memo_g);
  } else {
    for (int i = 0; i < nkey; i++) Py_DECREF(key[i]);
  }
#endif
  return rc;
}

static void forget_last(LastHit *h) {
  Py_CLEAR(h->scope); Py_CLEAR(h->table); Py_CLEAR(h->key); Py_CLEAR(h->entry); Py_CLEAR(h->launch);
  Py_CLEAR(h->device); Py_CLEAR(h->hits); Py_CLEAR(h->head);
}

static void forget_recorder(RecorderView *rv) {
  Py_CLEAR(rv->rec); Py_CLEAR(rv->heads);
  if (rv->sampling.obj) PyBuffer_Release(&rv->sampling);
  if (rv->nums.obj) PyBuffer_Release(&rv->nums);
}

/* Point d->rv at `rec` (read its hit block, every_hit, sampling once). 1, or -1 on error. */
static int view_recorder(RecorderView *rv, PyObject *rec) {
  if (rv->rec == rec) return 1;
  PyObject *hits = PyObject_GetAttr(rec, s_hits_attr), *c_hits = PyObject_GetAttr(rec, s_c_hits),
           *every = PyObject_GetAttr(rec, s_every_hit), *sampling = PyObject_GetAttr(rec, s_sampling);
  Py_buffer view = {0}, nums = {0};
  PyObject *heads = NULL;
  int ok = hits && c_hits && every && sampling && PyObject_GetBuffer(sampling, &view, PyBUF_WRITABLE) == 0;
  if (ok && view.len != 3 * (Py_ssize_t)sizeof(int64_t)) ok = 0;
  int native = ok ? PyObject_IsTrue(c_hits) : -1;
  if (native > 0 && !jl_hit_open(hits, &heads, &nums)) ok = 0, heads = NULL, nums.obj = NULL;
  int every_hit = ok ? PyObject_IsTrue(every) : -1;
  if (!ok || native < 0 || every_hit < 0 || PyErr_Occurred()) {
    if (view.obj) PyBuffer_Release(&view);
    if (nums.obj) PyBuffer_Release(&nums);
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "jitlab: the active recorder has no hit block");
    Py_XDECREF(hits); Py_XDECREF(c_hits); Py_XDECREF(every); Py_XDECREF(sampling);
    return -1;
  }
  forget_recorder(rv);
  rv->rec = Py_NewRef(rec), rv->sampling = view, rv->every_hit = every_hit;
  if (heads) rv->heads = Py_NewRef(heads), rv->nums = nums;
  Py_XDECREF(hits); Py_XDECREF(c_hits); Py_XDECREF(every); Py_XDECREF(sampling);
  return 1;
}

/* telemetry.recorder.Recorder.wants_hit() below level full, on its shared counters: 1 keep, 0 not. */
static int sample_hit(RecorderView *rv) {
  int64_t *c = (int64_t *)rv->sampling.buf; /* [offered, tick, sample_every] */
  c[0]++;
  if (c[2] <= 0) return 0;
  if (++c[1] >= c[2]) {
    c[1] = 0;
    return 1;
  }
  return 0;
}

/* The tail of a traced hit, as the generated hit path's: stamp t_exit and write the hit block's next row
 * (hit_block.h), or hand the hit to rec.record_hit when the block is full or not written from C
 * (telemetry.recorder). 1, or -1 on error. */
static int record_hit(RecorderView *rv, PyObject *head, long long t_enter, long long t_args) {
  long long t_exit = jl_now_ns();
  if (rv->heads && jl_hit_write(rv->heads, (int64_t *)rv->nums.buf, PyList_GET_SIZE(rv->heads), head, t_enter, t_args,
                                t_exit, PyThread_get_thread_ident()))
    return 1;
  PyObject *r = PyObject_CallMethod(rv->rec, "record_hit", "OLLL", head, t_enter, t_args, t_exit);
  Py_XDECREF(r);
  return r ? 1 : -1;
}

/* A new strong reference to every object of `h` (a snapshot the caller owns). */
static LastHit snapshot(const LastHit *h) {
  LastHit c = *h;
  Py_XINCREF(c.scope); Py_XINCREF(c.table); Py_XINCREF(c.key); Py_XINCREF(c.entry); Py_XINCREF(c.launch);
  Py_XINCREF(c.device); Py_XINCREF(c.hits); Py_XINCREF(c.head);
  return c;
}

/* Remember `entry` (found under `key` in `table` of `scope`) and what a hit reads from it, in d->last
 * and in *out (the caller's own snapshot). 1, or 0 when the entry is not one the C path launches (a grid
 * it cannot read), -1 on error. */
static int remember(Dispatcher *d, PyObject *scope, PyObject *table, PyObject *key, PyObject *entry, LastHit *out) {
  LastHit h = {NULL};
  PyObject *verify = NULL, *grid = NULL;
  int rc = -1;
  if (!(verify = PyObject_GetAttr(entry, s_verify)) || !(grid = PyObject_GetAttr(entry, s_grid)) ||
      !(h.launch = PyObject_GetAttr(entry, s_launch)) || !(h.device = PyObject_GetAttr(entry, s_device)) ||
      !(h.hits = PyObject_GetAttr(table, s_hits)) || !(h.head = PyObject_GetAttr(entry, s_head)))
    goto done;
  h.verify = PyObject_IsTrue(verify);
  if (h.verify < 0) goto done;
  h.has_grid = grid != Py_None;
  if (h.has_grid && !grid_dims(grid, h.grid)) { rc = 0; goto done; }
  h.scope = Py_NewRef(scope), h.table = Py_NewRef(table), h.key = Py_NewRef(key), h.entry = Py_NewRef(entry);
  *out = snapshot(&h);
  forget_last(&d->last);
  d->last = h;
  h = LastHit{NULL};
  rc = 1;
done:
  forget_last(&h);
  Py_XDECREF(verify); Py_XDECREF(grid);
  return rc;
}

/* The entry for this call's key, as a snapshot in *out that the caller owns (Python code run while
 * comparing, grids and hooks may let another thread replace d->last: the snapshot stays this call's).
 * 1 found, 0 not (slow path), -1 error. */
static int find_entry(Dispatcher *d, PyObject *scope, PyObject *const *vals, PyObject *const *tail, int ntail,
                      LastHit *out) {
  PyObject *table = PyDict_GetItemWithError(d->tables, scope); /* borrowed */
  if (!table) return PyErr_Occurred() ? -1 : 0;
  if (d->last.table == table && d->last.scope == scope) {
    LastHit snap = snapshot(&d->last);
    int same = key_equals(d->keyer, vals, tail, ntail, snap.key);
    if (same == 1) {
      *out = snap;
      return 1;
    }
    forget_last(&snap);
    if (same < 0) return -1;
  }
  PyObject *key = build_key(d->keyer, vals, tail, ntail), *entries = NULL;
  int rc = -1;
  if (!key) {
    /* an argument jitlab does not key (keys.Unsupported, ...): the Python path falls back to Triton */
    if (PyErr_ExceptionMatches(PyExc_Exception)) PyErr_Clear(), rc = 0;
    return rc;
  }
  if ((entries = PyObject_GetAttr(table, s_entries))) {
    PyObject *entry = PyDict_GetItemWithError(entries, key); /* borrowed, alive through `entries` */
    if (entry) rc = remember(d, scope, table, key, entry, out);
    else if (!PyErr_Occurred()) rc = 0;
    else if (PyErr_ExceptionMatches(PyExc_TypeError)) PyErr_Clear(), rc = 0; /* unhashable: Python path */
  }
  Py_DECREF(key);
  Py_XDECREF(entries);
  return rc;
}

/* Bind positional, then keyword arguments by interned name into vals[0..n) (borrowed), a name the kernel
 * lacks being a launch option (opt: name, value pairs). 1 bound, 0 for the Python path (which raises
 * Python's TypeError for a missing or doubled argument), -1 error. Keywords usually come in parameter
 * order: each search starts after the previous match. */
static int bind_args(Dispatcher *d, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, PyObject **vals,
                     PyObject **opt, Py_ssize_t *nopt) {
  Py_ssize_t npos = nargs - 1, nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0, next = npos;
  if (npos > d->npositional) return 0;
  memset(vals, 0, sizeof(PyObject *) * d->n);
  for (Py_ssize_t i = 0; i < npos; i++) vals[i] = args[1 + i];
  for (Py_ssize_t k = 0; k < nkw; k++) {
    PyObject *name = PyTuple_GET_ITEM(kwnames, k);
    Py_ssize_t j = -1, c = next < d->n ? next : 0;
    for (Py_ssize_t s = 0; s < d->n; s++, c = c + 1 < d->n ? c + 1 : 0)
      if (d->names[c] == name) { j = c; break; }
    if (j < 0) { /* not the interned object (or a launch option such as num_warps): look the text up */
      PyObject *pos = PyDict_GetItemWithError(d->index, name);
      if (pos) j = PyLong_AsSsize_t(pos);
      else if (PyErr_Occurred()) return -1;
    }
    if (j >= 0) {
      if (vals[j]) return 0;
      vals[j] = args[nargs + k];
      next = j + 1;
    } else {
      if (*nopt == MAX_OPTIONS) return 0;
      opt[2 * *nopt] = name;
      opt[2 * (*nopt)++ + 1] = args[nargs + k];
    }
  }
  for (Py_ssize_t j = 0; j < d->n; j++)
    if (!vals[j] && !(vals[j] = d->defaults[j])) return 0;
  return 1;
}

/* The hit, or 0 to take the slow path (no error set), or -1 on an error to raise. */
static int hit(Dispatcher *d, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  if (nargs < 1) return 0;
  PyObject *rec = PyObject_GetAttr(d->active, s_recorder); /* this call's own reference */
  if (!rec) return -1;
  int traced = rec != Py_None;
  if (traced && view_recorder(&d->rv, rec) < 0) return Py_DECREF(rec), -1;
  /* stamped like the Python path's t_enter, unless the recorder keeps no hits (summary) */
  long long t_enter = traced && ((int64_t *)d->rv.sampling.buf)[2] ? jl_now_ns() : 0;
  PyObject *vals[MAX_PARAMS], *opt[2 * MAX_OPTIONS], *tail[2 + MAX_STATE] = {NULL};
  PyObject *scope = NULL, *ugv = NULL, *stream_obj = NULL, *count = NULL;
  LastHit h = {NULL};
  Py_ssize_t nopt = 0;
  int ntail = 0, rc = bind_args(d, args, nargs, kwnames, vals, opt, &nopt);
  if (rc <= 0) goto done;
  BENCH_STOP(STOP_BIND, 1)
  rc = -1;
  /* The key's tail: options (keys.options_item: each value typed as a constexpr is, as Triton keys
   * options by their text), Triton state, device. */
  if (nopt == 0) {
    tail[ntail++] = Py_NewRef(d->empty);
  } else {
    PyObject *t = PyTuple_New(nopt);
    if (!t) goto done;
    tail[ntail++] = t;
    for (Py_ssize_t k = 0; k < nopt; k++) {
      PyObject *item = key_item(d->keyer, 'c', opt[2 * k + 1]);
      PyObject *pair = item ? PyTuple_Pack(2, opt[2 * k], item) : NULL;
      Py_XDECREF(item);
      if (!pair) { /* an option jitlab does not key (unhashable): the Python path falls back to Triton */
        if (PyErr_ExceptionMatches(PyExc_Exception)) PyErr_Clear(), rc = 0;
        goto done;
      }
      PyTuple_SET_ITEM(t, k, pair);
    }
  }
  for (int s = 0; s < d->nstate; s++)
    if (!(tail[ntail++] = read_state(&d->state[s]))) goto done;
  tail[ntail++] = PyLong_Check(d->device) ? Py_NewRef(d->device) : PyObject_CallNoArgs(d->device);
  if (!tail[ntail - 1]) goto done;
  if (PyContextVar_Get(d->scope_var, NULL, &scope) < 0) goto done;
  if (!scope || (rc = find_entry(d, scope, vals, tail, ntail, &h)) == 0) goto done;
  if (rc < 0) { /* an error keying this call: the Python path handles it (and falls back to Triton) */
    if (PyErr_ExceptionMatches(PyExc_Exception)) PyErr_Clear(), rc = 0;
    goto done;
  }
  BENCH_STOP(STOP_KEY, 1)
  rc = -1;
  {
    /* A global the kernel read changed (Triton raises), verify on, hooks set: the Python path does those. */
    if (!(ugv = PyObject_GetAttr(d->fn, s_used_global_vals))) goto done;
    int changed = globals_changed(ugv);
    if (changed) { rc = changed < 0 ? -1 : 0; goto done; }
    int32_t g[3];
    if (h.verify) { rc = 0; goto done; }
    int quiet = no_hooks(d);
    if (quiet <= 0) { rc = quiet; goto done; }
    if (h.has_grid) memcpy(g, h.grid, sizeof g);
    else if (!grid_dims(args[0], g)) {
      int got = call_grid(d, args[0], vals, g); /* a callable grid gets the dict Triton passes */
      if (got < 0) count_hit_keeping_error(h.hits, h.entry);
      if (got <= 0) { rc = got; goto done; }
    }
    BENCH_STOP(STOP_CHECKS, 1)
    /* level full keeps every hit; below it the recorder samples (its wants_hit(), in C); the view
     * again: a grid or a state read ran Python code, another thread may have pointed it elsewhere */
    if (traced && (view_recorder(&d->rv, rec) < 0 || !(d->rv.every_hit || sample_hit(&d->rv)))) {
      if (PyErr_Occurred()) goto done;
      t_enter = 0;
    }
    /* From here on it is a hit: count it, then launch (as the Python path does). */
    long long t_args = t_enter ? jl_now_ns() : 0;
    if (!(count = PyIter_Next(h.hits)) || PyObject_SetAttr(h.entry, s_used, count) < 0) goto done;
#ifdef JITLAB_BENCH_STOPS
    if ((d->bench.ab & AB_STREAM_ONCE) && d->bench.stream) stream_obj = Py_NewRef(d->bench.stream);
    else if ((stream_obj = PyObject_CallOneArg(d->get_stream, h.device)) && (d->bench.ab & AB_STREAM_ONCE))
      d->bench.stream = Py_NewRef(stream_obj);
    if (!stream_obj) goto done;
#else
    if (!(stream_obj = PyObject_CallOneArg(d->get_stream, h.device))) goto done;
#endif
    int native = Py_TYPE(h.launch) == &LauncherType;
    BENCH_STOP(STOP_PREP, 1)
    if (native) {
      uint64_t stream;
      Launcher *l = (Launcher *)h.launch;
      if (!convert('K', stream_obj, &stream, 3)) goto done;
#ifdef JITLAB_BENCH_STOPS
      uint64_t buf[MAX_PARAMS];
      if (d->bench.stop == STOP_PACK) rc = ensure_context(l->device) && pack_values(l, vals, buf) ? 1 : -1;
      else rc = launch_values_ab(l, g, stream, vals, d->bench.ab) ? 1 : -1;
#else
      rc = launch_values(l, g, stream, vals) ? 1 : -1;
#endif
    } else {
      /* (Triton's launcher packs inside its own call: with it, the pack stop is the prep stop) */
      BENCH_STOP(STOP_PACK, 1)
      /* Triton's launcher (or a test's): launch(g0, g1, g2, stream, *vals) */
      PyObject *call[4 + MAX_PARAMS];
      PyObject *gobj[3] = {PyLong_FromLong(g[0]), PyLong_FromLong(g[1]), PyLong_FromLong(g[2])};
      if (gobj[0] && gobj[1] && gobj[2]) {
        call[0] = gobj[0], call[1] = gobj[1], call[2] = gobj[2], call[3] = stream_obj;
        for (Py_ssize_t j = 0; j < d->n; j++) call[4 + j] = vals[j];
        PyObject *r = PyObject_Vectorcall(h.launch, call, 4 + d->n, NULL);
        rc = r ? 1 : -1;
        Py_XDECREF(r);
      }
      decref_all(gobj, 3);
    }
    /* (the view again: the launch released the GIL, another thread may have pointed it elsewhere) */
    if (rc > 0 && t_enter) rc = view_recorder(&d->rv, rec) < 0 ? -1 : record_hit(&d->rv, h.head, t_enter, t_args);
  }
done:
  decref_all(tail, ntail);
  forget_last(&h);
  Py_XDECREF(rec); Py_XDECREF(scope); Py_XDECREF(ugv); Py_XDECREF(stream_obj); Py_XDECREF(count);
  return rc;
}

static PyObject *dispatch_call(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
  Dispatcher *d = (Dispatcher *)callable;
  int r = hit(d, args, PyVectorcall_NARGS(nargsf), kwnames);
  if (r > 0) Py_RETURN_NONE;
  if (r < 0) return NULL;
  return PyObject_Vectorcall(d->slow, args, nargsf, kwnames);
}

static int dispatcher_traverse(PyObject *o, visitproc visit, void *arg) {
  Dispatcher *d = (Dispatcher *)o;
  Py_VISIT(d->keyer); Py_VISIT(d->index); Py_VISIT(d->device); Py_VISIT(d->get_stream); Py_VISIT(d->hook_holder); Py_VISIT(d->hook_chain);
  Py_VISIT(d->active); Py_VISIT(d->scope_var); Py_VISIT(d->tables); Py_VISIT(d->fn); Py_VISIT(d->slow);
  for (Py_ssize_t j = 0; j < d->n; j++) Py_VISIT(d->defaults[j]);
  for (int s = 0; s < d->nstate; s++) { Py_VISIT(d->state[s].obj); Py_VISIT(d->state[s].obj2); }
  Py_VISIT(d->last.scope); Py_VISIT(d->last.table); Py_VISIT(d->last.key); Py_VISIT(d->last.entry);
  Py_VISIT(d->last.launch); Py_VISIT(d->last.device); Py_VISIT(d->last.hits); Py_VISIT(d->last.head);
  Py_VISIT(d->rv.rec); Py_VISIT(d->rv.heads); Py_VISIT(d->rv.sampling.obj); Py_VISIT(d->rv.nums.obj);
  for (int i = 0; i < GRID_CODES; i++) Py_VISIT(d->grid_reads[i].code);
#ifdef JITLAB_BENCH_STOPS
  for (int i = 0; i < GRID_CODES; i++) {
    Py_VISIT(d->grid_reads[i].memo.chains);
    for (int k = 0; k < d->grid_reads[i].memo.memo_n; k++) Py_VISIT(d->grid_reads[i].memo.memo[k]);
  }
  Py_VISIT(d->bench.stream);
#endif
  return 0;
}

static int dispatcher_clear(PyObject *o) {
  Dispatcher *d = (Dispatcher *)o;
  Py_CLEAR(d->keyer); Py_CLEAR(d->index); Py_CLEAR(d->device); Py_CLEAR(d->get_stream); Py_CLEAR(d->hook_holder); Py_CLEAR(d->hook_chain);
  Py_CLEAR(d->active); Py_CLEAR(d->scope_var); Py_CLEAR(d->tables); Py_CLEAR(d->fn); Py_CLEAR(d->slow);
  Py_CLEAR(d->empty);
  forget_last(&d->last);
  forget_recorder(&d->rv);
  for (int i = 0; i < GRID_CODES; i++) Py_CLEAR(d->grid_reads[i].code);
#ifdef JITLAB_BENCH_STOPS
  for (int i = 0; i < GRID_CODES; i++) forget_memo(&d->grid_reads[i].memo);
  Py_CLEAR(d->bench.stream);
#endif
  for (Py_ssize_t j = 0; j < d->n; j++) { Py_CLEAR(d->names[j]); Py_CLEAR(d->defaults[j]); }
  for (int s = 0; s < d->nstate; s++) {
    Py_CLEAR(d->state[s].obj); Py_CLEAR(d->state[s].attr); Py_CLEAR(d->state[s].obj2); Py_CLEAR(d->state[s].attr2);
  }
  return 0;
}

static void dispatcher_dealloc(PyObject *o) {
  PyObject_GC_UnTrack(o);
  dispatcher_clear(o);
  PyObject_GC_Del(o);
}

static PyTypeObject DispatcherType;

/* make_dispatcher(names, defaults, npositional, keyer, state, device, get_stream, hook_holder, hook_chain,
 *                 active, scope_var, tables, fn, slow); defaults: one per name, a sentinel for required;
 * state: tuple of (op, obj, attr[, obj2, attr2]). */
static PyObject *make_dispatcher(PyObject *mod, PyObject *args) {
  PyObject *names, *defaults, *keyer, *state, *device, *get_stream, *holder, *chain, *active, *scope_var, *tables,
      *fn, *slow, *required;
  Py_ssize_t npositional;
  if (!PyArg_ParseTuple(args, "O!O!nO!O!OOOOOOO!OOO", &PyTuple_Type, &names, &PyTuple_Type, &defaults, &npositional,
                        &KeyerType, &keyer, &PyTuple_Type, &state, &device, &get_stream, &holder, &chain, &active,
                        &scope_var, &PyDict_Type, &tables, &fn, &slow, &required))
    return NULL;
  Py_ssize_t n = PyTuple_GET_SIZE(names);
  if (n > MAX_PARAMS || PyTuple_GET_SIZE(defaults) != n || ((Keyer *)keyer)->n != n ||
      PyTuple_GET_SIZE(state) > MAX_STATE || !PyContextVar_CheckExact(scope_var))
    return PyErr_Format(PyExc_ValueError, "make_dispatcher: inconsistent arguments");
  Dispatcher *d = PyObject_GC_New(Dispatcher, &DispatcherType);
  if (!d) return NULL;
  d->vectorcall = dispatch_call;
#ifdef JITLAB_BENCH_STOPS
  d->bench = BenchState{STOP_NONE, 0, NULL};
#endif
  d->last = LastHit{NULL};
  memset(d->grid_reads, 0, sizeof d->grid_reads);
  d->grid_next = 0;
  memset(&d->rv, 0, sizeof d->rv);
  d->n = 0;
  d->nstate = 0;
  d->npositional = npositional;
  d->keyer = (Keyer *)Py_NewRef(keyer);
  d->device = Py_NewRef(device); d->get_stream = Py_NewRef(get_stream);
  d->hook_holder = Py_NewRef(holder); d->hook_chain = Py_NewRef(chain); d->active = Py_NewRef(active);
  d->scope_var = Py_NewRef(scope_var); d->tables = Py_NewRef(tables); d->fn = Py_NewRef(fn); d->slow = Py_NewRef(slow);
  d->empty = PyTuple_New(0);
  d->index = PyDict_New();
  if (!d->empty || !d->index) { Py_DECREF(d); return NULL; }
  for (Py_ssize_t j = 0; j < n; j++, d->n++) {
    PyObject *nm = Py_NewRef(PyTuple_GET_ITEM(names, j)), *pos = PyLong_FromSsize_t(j);
    PyUnicode_InternInPlace(&nm);
    d->names[j] = nm;
    d->defaults[j] = NULL;
    if (!pos || PyDict_SetItem(d->index, nm, pos) < 0) { Py_XDECREF(pos); d->n++; Py_DECREF(d); return NULL; }
    Py_DECREF(pos);
    PyObject *df = PyTuple_GET_ITEM(defaults, j);
    d->defaults[j] = df == required ? NULL : Py_NewRef(df);
  }
  for (Py_ssize_t s = 0; s < PyTuple_GET_SIZE(state); s++, d->nstate++) {
    StateRead *r = &d->state[s];
    const char *op;
    r->obj = r->attr = r->obj2 = r->attr2 = NULL;
    if (!PyArg_ParseTuple(PyTuple_GET_ITEM(state, s), "sOU|OU", &op, &r->obj, &r->attr, &r->obj2, &r->attr2) ||
        !strchr("vnoz", op[0]) || (op[0] == 'o' && !r->obj2)) {
      r->obj = r->attr = r->obj2 = r->attr2 = NULL;
      PyErr_SetString(PyExc_ValueError, "state reads are (op, obj, attr[, obj2, attr2]) with op in v n o z");
      Py_DECREF(d);
      return NULL;
    }
    r->op = op[0];
    Py_INCREF(r->obj); Py_INCREF(r->attr); Py_XINCREF(r->obj2); Py_XINCREF(r->attr2);
  }
  PyObject_GC_Track((PyObject *)d);
  return (PyObject *)d;
}

static int init_dispatcher_type(void) {
  DispatcherType.tp_name = DISPATCH_MODULE ".Dispatcher";
  DispatcherType.tp_basicsize = sizeof(Dispatcher);
  DispatcherType.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_HAVE_GC;
  DispatcherType.tp_vectorcall_offset = offsetof(Dispatcher, vectorcall);
  DispatcherType.tp_call = PyVectorcall_Call;
  DispatcherType.tp_traverse = dispatcher_traverse;
  DispatcherType.tp_clear = dispatcher_clear;
  DispatcherType.tp_dealloc = dispatcher_dealloc;
  DispatcherType.tp_doc = "dispatcher(grid, *args, **kwargs): a jitcache launch, in C on a plain hit";
  return PyType_Ready(&DispatcherType);
}

/* noop(*args, **kwargs) -> None: the `c_call` baseline (a C function called exactly as a kernel launch
 * is: what the call site alone costs, the floor of any dispatcher called that way). */
static PyObject *noop(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  Py_RETURN_NONE;
}

/* set_grid_reads(fn): fn(code) -> the names a grid function with that code reads, or None (GridReads). */
static PyObject *set_grid_reads(PyObject *mod, PyObject *fn) {
  if (fn != Py_None && !PyCallable_Check(fn)) return PyErr_Format(PyExc_TypeError, "set_grid_reads needs a callable or None");
  Py_XSETREF(grid_reads_fn, fn == Py_None ? NULL : Py_NewRef(fn));
  Py_RETURN_NONE;
}

#ifdef JITLAB_BENCH_STOPS
/* set_grid_purity(purity, pure_callables): gridmeta.purity and gridmeta.pure_callables(), a tuple (AB_GRID_CACHE). */
static PyObject *set_grid_purity(PyObject *mod, PyObject *args) {
  PyObject *fn, *callables;
  if (!PyArg_ParseTuple(args, "OO!", &fn, &PyTuple_Type, &callables)) return NULL;
  if (!PyCallable_Check(fn)) return PyErr_Format(PyExc_TypeError, "set_grid_purity needs a callable");
  Py_XSETREF(grid_purity_fn, Py_NewRef(fn));
  Py_XSETREF(grid_pure_callables, Py_NewRef(callables));
  Py_RETURN_NONE;
}

/* set_stop(dispatcher, stage): make its hits stop after `stage` (0..STOP_LAST; see STOP_*), for
 * jitlab.bench.launch_parts: a stopped dispatcher launches nothing. */
static PyObject *set_stop(PyObject *mod, PyObject *args) {
  PyObject *d;
  int stage;
  if (!PyArg_ParseTuple(args, "O!i", &DispatcherType, &d, &stage)) return NULL;
  if (stage < STOP_NONE || stage > STOP_LAST) return PyErr_Format(PyExc_ValueError, "stage must be 0..%d", STOP_LAST);
  ((Dispatcher *)d)->bench.stop = stage;
  Py_RETURN_NONE;
}

/* set_ab(dispatcher, bits): the A/B variants of its launches (AB_*, native_launcher.h), for jitlab.bench. */
static PyObject *set_ab(PyObject *mod, PyObject *args) {
  PyObject *d;
  int bits;
  if (!PyArg_ParseTuple(args, "O!i", &DispatcherType, &d, &bits)) return NULL;
  if (bits < 0 || bits > AB_ALL) return PyErr_Format(PyExc_ValueError, "bits must be 0..%d", AB_ALL);
  BenchState *b = &((Dispatcher *)d)->bench;
  b->ab = bits;
  Py_CLEAR(b->stream);
  Py_RETURN_NONE;
}

/* launch_loop(launcher, n, gx, gy, gz, stream, vals, bits=0) -> ns: `n` launches of one of this module's
 * launchers from a C loop, no Python between them (jitlab's launcher where the C floor has a bare
 * cuLaunchKernel with a prebuilt array), for jitlab.bench.launch_parts. */
static PyObject *launch_loop(PyObject *mod, PyObject *args) {
  PyObject *l, *vals;
  long long n;
  int32_t g[3];
  unsigned long long stream;
  int bits = 0;
  if (!PyArg_ParseTuple(args, "O!LiiiKO!|i", &LauncherType, &l, &n, &g[0], &g[1], &g[2], &stream, &PyTuple_Type, &vals,
                        &bits))
    return NULL;
  if (PyTuple_GET_SIZE(vals) != ((Launcher *)l)->nargs || n < 0 || bits < 0 || bits > AB_ALL)
    return PyErr_Format(PyExc_ValueError, "launch_loop: %zd values for %zd arguments, n=%lld, bits=%d",
                        PyTuple_GET_SIZE(vals), ((Launcher *)l)->nargs, n, bits);
  if (!load_driver()) return PyErr_Format(PyExc_RuntimeError, "%s", driver_err);
  PyObject *const *items = ((PyTupleObject *)vals)->ob_item;
  long long t0 = jl_now_ns();
  for (long long i = 0; i < n; i++)
    if (!launch_values_ab((Launcher *)l, g, (uint64_t)stream, items, bits)) return NULL;
  return PyLong_FromLongLong(jl_now_ns() - t0);
}
#define BENCH_METHODS                                                                                         \
  {"set_stop", set_stop, METH_VARARGS, "set_stop(dispatcher, stage): the bench's stage stops (STOP_*)"},      \
  {"set_ab", set_ab, METH_VARARGS, "set_ab(dispatcher, bits): the bench's launch variants (AB_*)"},          \
  {"set_grid_purity", set_grid_purity, METH_VARARGS, "set_grid_purity(purity, pure_callables) (AB_GRID_CACHE)"}, \
  {"launch_loop", launch_loop, METH_VARARGS, "launch_loop(launcher, n, gx, gy, gz, stream, vals, bits=0) -> ns"},
#else
#define BENCH_METHODS
#endif

static PyMethodDef methods[] = {
    {"noop", (PyCFunction)(void (*)(void))noop, METH_FASTCALL | METH_KEYWORDS, "noop(*args, **kwargs): nothing, in C"},
    LAUNCHER_METHODS
    {"make_keyer", make_keyer, METH_VARARGS, "make_keyer(codes, tensor_type, spec, constexpr_item)"},
    {"make_dispatcher", make_dispatcher, METH_VARARGS, "make_dispatcher(...): see dispatch.cpp"},
    {"set_grid_reads", set_grid_reads, METH_O, "set_grid_reads(fn): what a grid function reads (GridReads)"},
    BENCH_METHODS
    {NULL, NULL, 0, NULL}};
static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, DISPATCH_MODULE, NULL, -1, methods};

PyMODINIT_FUNC DISPATCH_INIT(void) {
  if (init_keyer_type() < 0 || init_dispatcher_type() < 0) return NULL;
  const char *attrs[] = {"recorder", "entries", "hits", "used_global_vals", "verify", "grid", "device", "launch",
                         "launch_enter_hook", "launch_exit_hook", "calls", "hits", "c_hits", "head",
                         "every_hit", "_sampling", "used"};
  PyObject **slots[] = {&s_recorder, &s_entries, &s_hits, &s_used_global_vals, &s_verify, &s_grid, &s_device,
                        &s_launch, &s_enter, &s_exit, &s_calls, &s_hits_attr, &s_c_hits, &s_head, &s_every_hit,
                        &s_sampling, &s_used};
  for (int i = 0; i < 17; i++)
    if (!(*slots[i] = PyUnicode_InternFromString(attrs[i]))) return NULL;
  PyObject *m = PyModule_Create(&moddef);
  if (!m || init_launcher_module(m) < 0) return NULL;
  return m;
}
