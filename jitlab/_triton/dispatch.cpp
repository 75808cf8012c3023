/* jitlab's native dispatcher: `kernel[grid](...)` in one C call on a cache hit.
 *
 * A Dispatcher is made per kernel and policy (jitlab/cache.py). Called as dispatcher(grid, *args,
 * **kwargs), it binds the arguments to the kernel's parameters (keywords matched by interned name),
 * computes jitlab's key exactly as the generated Python hit path does (native_key.h, with tensor
 * dtype and address read through torch's C++ API instead of Python method calls), finds the entry in
 * the same per-scope table, and launches it (native_launcher.h), with no Python frame.
 *
 * Anything else leaves through `slow`, the generated Python hit path (codegen.py), called with the
 * original arguments: a miss, a fallback, tracing on, verify due, hooks set, a kernel that read
 * globals, a callable grid, an argument binding it does not handle. So the Python path stays the
 * reference implementation, and the dispatcher only ever takes the path it would take on a plain hit.
 *
 * Built on first use with the host C++ compiler against the installed torch (jitlab/_cbuild.py). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <torch/csrc/DynamicTypes.h>
#include <torch/csrc/autograd/python_variable.h>

#include <stdint.h>

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

typedef struct {
  PyObject_HEAD
  vectorcallfunc vectorcall;
  Py_ssize_t n, npositional; /* parameters; how many may be given positionally */
  PyObject *names[MAX_PARAMS], *defaults[MAX_PARAMS]; /* interned names; NULL: required */
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

static PyObject *s_recorder, *s_entries, *s_hits, *s_used_global_vals, *s_verify, *s_grid, *s_device, *s_launch,
    *s_enter, *s_exit, *s_calls;

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

/* The hit, or 0 to take the slow path (no error set), or -1 on an error to raise. */
static int hit(Dispatcher *d, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  PyObject *rec = PyObject_GetAttr(d->active, s_recorder);
  if (!rec) return -1;
  Py_DECREF(rec);
  if (rec != Py_None || nargs < 1) return 0;
  /* Bind: positional, then keywords by interned name (a name the kernel lacks is a launch option). */
  PyObject *vals[MAX_PARAMS] = {NULL};
  PyObject *opt[2 * MAX_OPTIONS];
  Py_ssize_t npos = nargs - 1, nopt = 0, nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
  if (npos > d->npositional) return 0;
  for (Py_ssize_t i = 0; i < npos; i++) vals[i] = args[1 + i];
  for (Py_ssize_t k = 0; k < nkw; k++) {
    PyObject *name = PyTuple_GET_ITEM(kwnames, k);
    Py_ssize_t j = 0;
    while (j < d->n && d->names[j] != name) j++;
    if (j == d->n) /* not the interned object: compare the text */
      for (j = 0; j < d->n && PyUnicode_Compare(d->names[j], name) != 0; j++) {}
    if (j < d->n) {
      if (vals[j]) return 0; /* given twice: the Python path raises Python's TypeError */
      vals[j] = args[nargs + k];
    } else {
      if (nopt == MAX_OPTIONS) return 0;
      opt[2 * nopt] = name;
      opt[2 * nopt++ + 1] = args[nargs + k];
    }
  }
  for (Py_ssize_t j = 0; j < d->n; j++)
    if (!vals[j] && !(vals[j] = d->defaults[j])) return 0; /* missing: Python's TypeError */
  /* The key's tail: options (as `tuple(options.items())`), Triton state, device. */
  PyObject *tail[2 + MAX_STATE] = {NULL};
  int ntail = 0, rc = -1;
  PyObject *key = NULL, *scope = NULL, *entries = NULL, *ugv = NULL, *verify = NULL, *eg = NULL, *edev = NULL,
           *launch = NULL, *hits = NULL, *count = NULL, *stream_obj = NULL;
  if (nopt == 0) {
    tail[ntail++] = Py_NewRef(d->empty);
  } else {
    PyObject *t = PyTuple_New(nopt);
    if (!t) goto done;
    tail[ntail++] = t;
    for (Py_ssize_t k = 0; k < nopt; k++) {
      PyObject *pair = PyTuple_Pack(2, opt[2 * k], opt[2 * k + 1]);
      if (!pair) goto done;
      PyTuple_SET_ITEM(t, k, pair);
    }
  }
  for (int s = 0; s < d->nstate; s++)
    if (!(tail[ntail++] = read_state(&d->state[s]))) goto done;
  tail[ntail++] = PyLong_Check(d->device) ? Py_NewRef(d->device) : PyObject_CallNoArgs(d->device);
  if (!tail[ntail - 1]) goto done;
  if (!(key = build_key(d->keyer, vals, tail, ntail))) {
    /* an argument jitlab does not key (keys.Unsupported, unhashable): the Python path falls back */
    if (PyErr_ExceptionMatches(PyExc_Exception)) PyErr_Clear(), rc = 0;
    goto done;
  }
  if (PyContextVar_Get(d->scope_var, NULL, &scope) < 0) goto done;
  {
    PyObject *table = scope ? PyDict_GetItemWithError(d->tables, scope) : NULL; /* borrowed */
    if (!table) { rc = PyErr_Occurred() ? -1 : 0; goto done; }
    if (!(entries = PyObject_GetAttr(table, s_entries))) goto done;
    PyObject *entry = PyDict_GetItemWithError(entries, key); /* borrowed, kept alive by `entries` */
    if (!entry) {
      /* an unhashable item raises here: the Python path falls back to Triton for it */
      if (PyErr_Occurred()) { if (!PyErr_ExceptionMatches(PyExc_TypeError)) goto done; PyErr_Clear(); }
      rc = 0;
      goto done;
    }
    /* Globals the kernel read, verify due, hooks set: the Python path does those. */
    if (!(ugv = PyObject_GetAttr(d->fn, s_used_global_vals))) goto done;
    if (!PyDict_Check(ugv) || PyDict_GET_SIZE(ugv)) { rc = 0; goto done; }
    if (!(verify = PyObject_GetAttr(entry, s_verify))) goto done;
    if (verify != Py_False && !(PyLong_CheckExact(verify) && PyLong_AsLong(verify) == 0)) { rc = 0; goto done; }
    int quiet = no_hooks(d);
    if (quiet <= 0) { rc = quiet; goto done; }
    int32_t g[3];
    if (!(eg = PyObject_GetAttr(entry, s_grid))) goto done;
    if (!grid_dims(eg != Py_None ? eg : args[0], g)) { rc = 0; goto done; } /* callable grid: Python path */
    if (!(launch = PyObject_GetAttr(entry, s_launch)) || !(edev = PyObject_GetAttr(entry, s_device))) goto done;
    /* From here on it is a hit: count it, then launch (as the Python path does). */
    if (!(hits = PyObject_GetAttr(table, s_hits)) || !(count = PyIter_Next(hits))) goto done;
    if (!(stream_obj = PyObject_CallOneArg(d->get_stream, edev))) goto done;
    if (Py_TYPE(launch) == &LauncherType) {
      uint64_t stream;
      if (!convert('K', stream_obj, &stream, 3)) goto done;
      rc = launch_values((Launcher *)launch, g, stream, vals) ? 1 : -1;
    } else { /* Triton's launcher (or a test's): launch(g0, g1, g2, stream, *vals) */
      PyObject *call[4 + MAX_PARAMS];
      PyObject *gobj[3] = {PyLong_FromLong(g[0]), PyLong_FromLong(g[1]), PyLong_FromLong(g[2])};
      if (gobj[0] && gobj[1] && gobj[2]) {
        call[0] = gobj[0], call[1] = gobj[1], call[2] = gobj[2], call[3] = stream_obj;
        for (Py_ssize_t j = 0; j < d->n; j++) call[4 + j] = vals[j];
        PyObject *r = PyObject_Vectorcall(launch, call, 4 + d->n, NULL);
        rc = r ? 1 : -1;
        Py_XDECREF(r);
      }
      decref_all(gobj, 3);
    }
  }
done:
  decref_all(tail, ntail);
  Py_XDECREF(key); Py_XDECREF(scope); Py_XDECREF(entries); Py_XDECREF(ugv); Py_XDECREF(verify);
  Py_XDECREF(eg); Py_XDECREF(edev); Py_XDECREF(launch); Py_XDECREF(hits); Py_XDECREF(count); Py_XDECREF(stream_obj);
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
  Py_VISIT(d->keyer); Py_VISIT(d->device); Py_VISIT(d->get_stream); Py_VISIT(d->hook_holder); Py_VISIT(d->hook_chain);
  Py_VISIT(d->active); Py_VISIT(d->scope_var); Py_VISIT(d->tables); Py_VISIT(d->fn); Py_VISIT(d->slow);
  for (Py_ssize_t j = 0; j < d->n; j++) Py_VISIT(d->defaults[j]);
  for (int s = 0; s < d->nstate; s++) { Py_VISIT(d->state[s].obj); Py_VISIT(d->state[s].obj2); }
  return 0;
}

static int dispatcher_clear(PyObject *o) {
  Dispatcher *d = (Dispatcher *)o;
  Py_CLEAR(d->keyer); Py_CLEAR(d->device); Py_CLEAR(d->get_stream); Py_CLEAR(d->hook_holder); Py_CLEAR(d->hook_chain);
  Py_CLEAR(d->active); Py_CLEAR(d->scope_var); Py_CLEAR(d->tables); Py_CLEAR(d->fn); Py_CLEAR(d->slow);
  Py_CLEAR(d->empty);
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
  d->n = 0;
  d->nstate = 0;
  d->npositional = npositional;
  d->keyer = (Keyer *)Py_NewRef(keyer);
  d->device = Py_NewRef(device); d->get_stream = Py_NewRef(get_stream);
  d->hook_holder = Py_NewRef(holder); d->hook_chain = Py_NewRef(chain); d->active = Py_NewRef(active);
  d->scope_var = Py_NewRef(scope_var); d->tables = Py_NewRef(tables); d->fn = Py_NewRef(fn); d->slow = Py_NewRef(slow);
  d->empty = PyTuple_New(0);
  for (Py_ssize_t j = 0; j < n; j++, d->n++) {
    PyObject *nm = Py_NewRef(PyTuple_GET_ITEM(names, j));
    PyUnicode_InternInPlace(&nm);
    d->names[j] = nm;
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
  DispatcherType.tp_name = "_jitlab_dispatch.Dispatcher";
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

static PyObject *driver_status(PyObject *mod, PyObject *unused) {
  if (load_driver()) Py_RETURN_NONE;
  return PyUnicode_FromString(driver_err);
}

/* noop(*args, **kwargs) -> None: the `c_call` baseline (a C function called exactly as a kernel launch
 * is: what the call site alone costs, the floor of any dispatcher called that way). */
static PyObject *noop(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"noop", (PyCFunction)(void (*)(void))noop, METH_FASTCALL | METH_KEYWORDS, "noop(*args, **kwargs): nothing, in C"},
    {"make", make, METH_VARARGS, "make(function, num_warps, shared, codes, frozen, n_tail=2, device=0)"},
    {"param_sizes", param_sizes, METH_O, "sizes of a loaded CUfunction's parameters (None: unknown)"},
    {"driver_status", driver_status, METH_NOARGS, "None if libcuda is usable, else why not"},
    {"make_keyer", make_keyer, METH_VARARGS, "make_keyer(codes, tensor_type, spec, constexpr_item)"},
    {"make_dispatcher", make_dispatcher, METH_VARARGS, "make_dispatcher(...): see dispatch.cpp"},
    {NULL, NULL, 0, NULL}};
static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "_jitlab_dispatch", NULL, -1, methods};

PyMODINIT_FUNC PyInit__jitlab_dispatch(void) {
  if (init_launcher_type() < 0 || init_keyer_type() < 0 || init_dispatcher_type() < 0) return NULL;
  s_data_ptr = PyUnicode_InternFromString("data_ptr");
  s_is_cuda = PyUnicode_InternFromString("is_cuda");
  const char *attrs[] = {"recorder", "entries", "hits", "used_global_vals", "verify", "grid", "device", "launch",
                         "launch_enter_hook", "launch_exit_hook", "calls"};
  PyObject **slots[] = {&s_recorder, &s_entries, &s_hits, &s_used_global_vals, &s_verify, &s_grid, &s_device,
                        &s_launch, &s_enter, &s_exit, &s_calls};
  for (int i = 0; i < 11; i++)
    if (!(*slots[i] = PyUnicode_InternFromString(attrs[i]))) return NULL;
  LIVE = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type);
  PyObject *m = PyModule_Create(&moddef);
  if (!m || !s_data_ptr || !s_is_cuda || !LIVE) return NULL;
  Py_INCREF(LIVE);
  if (PyModule_AddObject(m, "LIVE", LIVE) < 0) return NULL;
  return m;
}
