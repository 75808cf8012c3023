/* jitlab's minimal launcher for Triton CUDA kernels on the jitcache hit path (shared by the C module
 * native_launcher.c and the C++ dispatcher dispatch.cpp; written in the common subset of C and C++).
 *
 * It replaces Triton 3.6's per-kernel generated launcher (triton/backends/nvidia/driver.py,
 * make_launcher) for the kernels jitlab/_triton/native.py accepts (num_ctas 1, no cluster,
 * no cooperative/PDL launch, no scratch, no tensor descriptors, no tuples), and does only what
 * that launcher does per call, minus: PyArg_ParseTuple, the hook/metadata protocol (jitlab calls
 * Triton's own launcher whenever a hook is set), cuLaunchKernelEx attributes (none apply), and
 * cuPointerGetAttribute for objects whose `is_cuda` is True (Triton's "cpu tensor?" check: we
 * still run it, unchanged, for every other object with data_ptr()).
 *
 * Kernel parameters (same order and byte sizes as Triton's `params[]`): every non-constexpr
 * bound argument, then `n_tail` NULL pointers (3.5/3.6: global_scratch, profile_scratch, passed
 * as NULL when their size is 0, which native.py requires).
 *
 * Type codes, one per bound argument. Integer codes are the PyArg_ParseTuple format letters
 * Triton 3.6 generates for that type, with the same conversion and overflow behaviour:
 *   'x' constexpr slot (skipped)    'P' pointer (int address, None, or data_ptr())
 *   'b' i1/i8   'h' i16  'i' i32  'L' i64     (range-checked: OverflowError, like "b","h","i","L")
 *   'B' u1/u8   'H' u16  'I' u32  'K' u64     (masked, no overflow check, like "B","H","I","K")
 *   'e' fp16  'E' bf16  'f' fp32  'd' fp64    (PyFloat_AsDouble, packed like pack_fp16/bf16/...)
 * No libcuda link: the driver is dlopen'ed on first make(), as Triton does for cuLaunchKernelEx,
 * so the module imports on a machine without a GPU. native_launcher_hip.c builds the same code for
 * Triton's HIP backend (JITLAB_HIP defined: native_hip.h replaces the CUDA driver block below). */
#ifndef JITLAB_NATIVE_LAUNCHER_H
#define JITLAB_NATIVE_LAUNCHER_H
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__ || __SIZEOF_LONG__ != 8
#error "parameter slots assume a little-endian LP64 host (as Linux CUDA hosts are)"
#endif

#define MAX_PARAMS 256 /* CUDA caps kernel params at 4 KiB (32 KiB on 12.1+/Volta+); 256 slots is ample */
static PyObject *LIVE, *s_data_ptr, *s_is_cuda;

#ifdef JITLAB_HIP /* native_launcher_hip.c: the same launcher over libamdhip64 (Triton's HIP launcher) */
#include "native_hip.h"
#else
#include "cuda.h" /* types only; every entry point is dlsym'ed by its plain name */
#define MODULE_NAME _jitlab_native
#define DRIVER_METHODS
#define GRID_EMPTY(g) ((long long)(g)[0] * (g)[1] * (g)[2] <= 0) /* Triton 3.6: launches if gx*gy*gz > 0 */

typedef CUresult (*launch_fn)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                              unsigned, CUstream, void **, void **);
static struct {
  launch_fn launch;
  CUresult (*ctx_get)(CUcontext *);
  CUresult (*ctx_set)(CUcontext);
  CUresult (*dev_get)(CUdevice *, int);
  CUresult (*retain)(CUcontext *, CUdevice);
  CUresult (*err_str)(CUresult, const char **);
  CUresult (*ptr_attr)(void *, CUpointer_attribute, CUdeviceptr);
  CUresult (*param_info)(CUfunction, size_t, size_t *, size_t *); /* 12.4+ drivers; may be NULL */
#ifdef JITLAB_BENCH_STOPS /* the bench build's A/B of the launch call (AB_LAUNCH_EX); may be NULL */
  CUresult (*launch_ex)(const CUlaunchConfig *, CUfunction, void **, void **);
#endif
} cu;
static int driver_state = 0; /* 0 untried, 1 loaded, -1 failed (reason in driver_err) */
static char driver_err[512];

/* Load libcuda once (always under the GIL). Returns 1 when usable. */
static int load_driver(void) {
  if (driver_state) return driver_state > 0;
  void *h = dlopen("libcuda.so.1", RTLD_LAZY); /* as Triton; torch has usually loaded it already */
  if (!h) return snprintf(driver_err, sizeof driver_err, "cannot dlopen libcuda.so.1: %s", dlerror()), driver_state = -1, 0;
#define SYM(field, name)                                                                            \
  if (!(*(void **)&cu.field = dlsym(h, name))) {                                                    \
    snprintf(driver_err, sizeof driver_err, "libcuda.so.1 lacks %s", name);                         \
    driver_state = -1;                                                                              \
    return 0;                                                                                       \
  }
  SYM(launch, "cuLaunchKernel") SYM(ctx_get, "cuCtxGetCurrent") SYM(ctx_set, "cuCtxSetCurrent")
  SYM(dev_get, "cuDeviceGet") SYM(retain, "cuDevicePrimaryCtxRetain") SYM(err_str, "cuGetErrorString")
  SYM(ptr_attr, "cuPointerGetAttribute")
#undef SYM
  *(void **)&cu.param_info = dlsym(h, "cuFuncGetParamInfo");
#ifdef JITLAB_BENCH_STOPS
  *(void **)&cu.launch_ex = dlsym(h, "cuLaunchKernelEx");
#endif
  driver_state = 1;
  return 1;
}

/* Triton's gpuAssert: RuntimeError("Triton Error [CUDA]: <cuGetErrorString>"). Returns 0. */
static int cuda_error(CUresult e) {
  const char *s = NULL;
  if (cu.err_str(e, &s) != CUDA_SUCCESS || !s) s = "unknown error";
  PyErr_Format(PyExc_RuntimeError, "Triton Error [CUDA]: %s", s);
  return 0;
}

/* Triton's ensureCudaContext, per call and per thread (nothing cached): if this thread has no
 * current context, make the primary context of the kernel's device current (Triton uses device
 * 0; native.py passes the entry's device, which is 0 unless told otherwise). */
static int ensure_context(int device) {
  CUcontext ctx = NULL;
  CUresult e = cu.ctx_get(&ctx);
  if (e != CUDA_SUCCESS) return cuda_error(e);
  if (ctx) return 1;
  CUdevice dev;
  if ((e = cu.dev_get(&dev, device)) != CUDA_SUCCESS || (e = cu.retain(&ctx, dev)) != CUDA_SUCCESS ||
      (e = cu.ctx_set(ctx)) != CUDA_SUCCESS)
    return cuda_error(e);
  return 1;
}
#endif /* JITLAB_HIP */

/* Triton's getPointer: int -> raw address (no validation), None -> NULL, else data_ptr(). */
static int to_pointer(PyObject *o, void *dst, Py_ssize_t idx) {
  uint64_t p;
  if (o == Py_None) p = 0;
  else if (PyLong_Check(o)) { /* PyLong_AsUnsignedLong: Triton's AsUnsignedLongLong on LP64, faster */
    p = PyLong_AsUnsignedLong(o);
    if (p == (uint64_t)-1 && PyErr_Occurred()) return 0;
  } else {
#ifdef JITLAB_TORCH /* dispatch.cpp: a CUDA torch.Tensor's address read through torch's C++ API */
    int fast = torch_cuda_pointer(o, &p);
    if (fast < 0) return 0;
    if (fast) return memcpy(dst, &p, 8), 1;
#endif
    PyObject *r = PyObject_CallMethodNoArgs(o, s_data_ptr);
    if (!r) return PyErr_SetString(PyExc_TypeError, "Pointer argument must be either uint64 or have data_ptr method"), 0;
    if (!PyLong_Check(r)) {
      Py_DECREF(r);
      return PyErr_SetString(PyExc_TypeError, "data_ptr method of Pointer object must return 64-bit int"), 0;
    }
    p = PyLong_AsUnsignedLong(r);
    Py_DECREF(r);
    if (p == (uint64_t)-1 && PyErr_Occurred()) return 0;
    if (p != 0) {
      /* Fast path: a torch CUDA tensor says so (a getset returning a singleton, no allocation). */
      PyObject *c = PyObject_GetAttr(o, s_is_cuda);
      if (c) Py_DECREF(c); else PyErr_Clear();
      if (c != Py_True) { /* anything else (CPU/pinned tensor, foreign object): Triton's exact check */
        CUdeviceptr dp;
        CUresult st = cu.ptr_attr(&dp, CU_POINTER_ATTRIBUTE_DEVICE_POINTER, (CUdeviceptr)p);
        if (st == CUDA_ERROR_INVALID_VALUE)
          return PyErr_Format(PyExc_ValueError, "Pointer argument (at %zd) cannot be accessed from Triton (cpu tensor?)", idx), 0;
        if (st != CUDA_SUCCESS) return cuda_error(st);
        p = (uint64_t)dp;
      }
    }
  }
  memcpy(dst, &p, 8);
  return 1;
}

/* One bound argument -> its kernel parameter bytes at dst (a zeroed 8-byte slot; little-endian,
 * so narrower types are its low bytes, which is what cuLaunchKernel copies). Mirrors CPython's
 * getargs.c for the format letter Triton 3.6 generates: same results, same errors. */
static int convert(char code, PyObject *o, void *dst, Py_ssize_t idx) {
  size_t n = (code == 'b' || code == 'B') ? 1 : (code == 'h' || code == 'H' || code == 'E') ? 2 : 4; /* if < 8 */
  switch (code) {
  case 'P': return to_pointer(o, dst, idx);
  case 'b': case 'h': case 'i': { /* "b" is 0..255 (unsigned!), "h" short, "i" int: OverflowError */
    long v = PyLong_AsLong(o);
    long lo = code == 'b' ? 0 : code == 'h' ? SHRT_MIN : INT_MIN, hi = code == 'b' ? UCHAR_MAX : code == 'h' ? SHRT_MAX : INT_MAX;
    if (v == -1 && PyErr_Occurred()) return 0;
    if (v < lo || v > hi)
      return PyErr_Format(PyExc_OverflowError, "%s is %s", code == 'b' ? "unsigned byte integer" : code == 'h' ? "signed short integer" : "signed integer",
                          v < lo ? "less than minimum" : "greater than maximum"), 0;
    memcpy(dst, &v, n);
    return 1;
  }
  case 'L': { /* "L": PyLong_AsLongLong, OverflowError past int64 */
    long long v = PyLong_AsLongLong(o);
    if (v == -1 && PyErr_Occurred()) return 0;
    memcpy(dst, &v, 8);
    return 1;
  }
  case 'B': case 'H': case 'I': { /* "bitfield" formats: PyLong_AsUnsignedLongMask, no overflow check */
    unsigned long v = PyLong_AsUnsignedLongMask(o);
    if (v == (unsigned long)-1 && PyErr_Occurred()) return 0;
    memcpy(dst, &v, n);
    return 1;
  }
  case 'K': { /* "K" insists on an int (no __index__), then masks */
    if (!PyLong_Check(o))
      return PyErr_Format(PyExc_TypeError, "argument %zd must be int, not %.50s", idx, Py_TYPE(o)->tp_name), 0;
    unsigned long long v = PyLong_AsUnsignedLongLongMask(o);
    memcpy(dst, &v, 8);
    return 1;
  }
  case 'e': case 'E': case 'f': case 'd': { /* "d" (PyFloat_AsDouble), then Triton's pack_* */
    double d = PyFloat_AsDouble(o);
    if (d == -1.0 && PyErr_Occurred()) return 0;
    if (code == 'd') return memcpy(dst, &d, 8), 1;
    /* pack_fp16 is PyFloat_Pack2 (OverflowError past 65504: Triton raises it after launching, we
     * before); pack_bf16 truncates the fp32 bits (no rounding); pack_fp32 is a C cast. */
    if (code == 'e') return PyFloat_Pack2(d, (char *)dst, 1) == 0;
    float f = (float)d;
    uint32_t u;
    memcpy(&u, &f, 4);
    if (code == 'E') u >>= 16;
    memcpy(dst, &u, n);
    return 1;
  }
  }
  PyErr_Format(PyExc_ValueError, "unknown type code %c", code);
  return 0;
}

typedef struct {
  int32_t arg;  /* index into vals */
  int16_t slot; /* kernel parameter index */
  char code;
} Live;

typedef struct {
  PyObject_HEAD
  vectorcallfunc vectorcall;
  CUfunction function;
  unsigned block_x, shared;
  int device, nparams, nlive;
  Py_ssize_t nargs;
  uint64_t tmpl[MAX_PARAMS]; /* frozen values and NULL scratch written once, copied per call */
  Live live[MAX_PARAMS];
#ifdef JITLAB_BENCH_STOPS /* AB_PARAMS_ONCE: one buffer and pointer array per launcher, set up at the first launch */
  int once_ready;
  uint64_t once_buf[MAX_PARAMS];
  void *once_params[MAX_PARAMS];
#endif
} Launcher;

/* The parameter buffer of one launch: the frozen template, then each live value converted (Triton's
 * conversions and errors). Called after ensure_context (cuPointerGetAttribute needs a context). 1, or 0
 * with an error set. */
static int pack_values(const Launcher *self, PyObject *const *vals, uint64_t *buf) {
  memcpy(buf, self->tmpl, (size_t)self->nparams * 8);
  for (int k = 0; k < self->nlive; k++) {
    const Live *l = &self->live[k];
    if (!convert(l->code, vals[l->arg], &buf[l->slot], l->arg)) return 0;
  }
  return 1;
}

/* One launch: grid, stream and the bound values as C data (the dispatcher calls this directly). */
static int launch_values(Launcher *self, const int32_t g[3], uint64_t stream, PyObject *const *vals) {
  /* Triton calls ensureCudaContext before anything else (cuPointerGetAttribute needs one). */
  if (!ensure_context(self->device)) return 0;
  /* Per-call state lives on this stack frame only: launches from several threads never share it. */
  uint64_t buf[MAX_PARAMS];
  void *params[MAX_PARAMS];
  if (!pack_values(self, vals, buf)) return 0;
  /* Triton converts every argument (raising its errors) and only then skips an empty grid. */
  if (GRID_EMPTY(g)) return 1;
  for (int k = 0; k < self->nparams; k++) params[k] = &buf[k];
  CUresult e;
  Py_BEGIN_ALLOW_THREADS; /* as Triton: the driver may block when the launch queue is full */
  e = cu.launch(self->function, (unsigned)g[0], (unsigned)g[1], (unsigned)g[2], self->block_x, 1, 1, self->shared,
                (CUstream)(uintptr_t)stream, params, NULL);
  Py_END_ALLOW_THREADS;
  if (e != CUDA_SUCCESS) return cuda_error(e);
  return 1;
}

#ifdef JITLAB_BENCH_STOPS
/* The bench build's A/B variants of one launch (dispatch.cpp's set_ab, jitlab.bench.launch_parts), each a
 * bit, to find what the driver call costs beyond the C floor's tight loop: AB_NO_GIL_RELEASE keeps the GIL
 * around the driver call; AB_LAUNCH_EX calls cuLaunchKernelEx with no attributes, as Triton's launcher does
 * for these kernels; AB_PARAMS_ONCE converts into one buffer per launcher whose pointer array is built once
 * (not thread-safe: bench only); the dispatcher's own bits: AB_STREAM_ONCE reuses the first stream read,
 * AB_GRID_WHOLE_DICT gives every callable grid Triton's whole dict (dispatch.cpp's GridReads off),
 * AB_GRID_CACHE reuses a pure grid's last result while the values it depends on are equal (GridMemo). With
 * no bit set this is launch_values. */
enum { AB_NO_GIL_RELEASE = 1, AB_LAUNCH_EX = 2, AB_PARAMS_ONCE = 4, AB_STREAM_ONCE = 8, AB_GRID_WHOLE_DICT = 16,
       AB_GRID_CACHE = 32, AB_ALL = 63 };

static int launch_values_ab(Launcher *self, const int32_t g[3], uint64_t stream, PyObject *const *vals, int ab) {
  if (!ensure_context(self->device)) return 0;
  uint64_t local_buf[MAX_PARAMS];
  void *local_params[MAX_PARAMS];
  uint64_t *buf = local_buf;
  void **params = local_params;
  if (ab & AB_PARAMS_ONCE) {
    buf = self->once_buf, params = self->once_params;
    if (!self->once_ready) {
      memcpy(buf, self->tmpl, (size_t)self->nparams * 8);
      for (int k = 0; k < self->nparams; k++) params[k] = &buf[k];
      self->once_ready = 1;
    }
    for (int k = 0; k < self->nlive; k++) {
      const Live *l = &self->live[k];
      if (!convert(l->code, vals[l->arg], &buf[l->slot], l->arg)) return 0;
    }
  } else {
    if (!pack_values(self, vals, buf)) return 0;
  }
  if (GRID_EMPTY(g)) return 1;
  if (!(ab & AB_PARAMS_ONCE))
    for (int k = 0; k < self->nparams; k++) params[k] = &buf[k];
  CUresult e;
  CUlaunchConfig config;
  if (ab & AB_LAUNCH_EX) {
    if (!cu.launch_ex) return PyErr_SetString(PyExc_RuntimeError, "the driver has no cuLaunchKernelEx"), 0;
    memset(&config, 0, sizeof config);
    config.gridDimX = (unsigned)g[0], config.gridDimY = (unsigned)g[1], config.gridDimZ = (unsigned)g[2];
    config.blockDimX = self->block_x, config.blockDimY = 1, config.blockDimZ = 1;
    config.sharedMemBytes = self->shared, config.hStream = (CUstream)(uintptr_t)stream;
    config.attrs = NULL, config.numAttrs = 0;
  }
#define AB_LAUNCH_CALL                                                                                           \
  e = (ab & AB_LAUNCH_EX) ? cu.launch_ex(&config, self->function, params, NULL)                                 \
                          : cu.launch(self->function, (unsigned)g[0], (unsigned)g[1], (unsigned)g[2],           \
                                      self->block_x, 1, 1, self->shared, (CUstream)(uintptr_t)stream, params, NULL)
  if (ab & AB_NO_GIL_RELEASE) {
    AB_LAUNCH_CALL;
  } else {
    Py_BEGIN_ALLOW_THREADS;
    AB_LAUNCH_CALL;
    Py_END_ALLOW_THREADS;
  }
#undef AB_LAUNCH_CALL
  if (e != CUDA_SUCCESS) return cuda_error(e);
  return 1;
}
#endif /* JITLAB_BENCH_STOPS */

/* launcher(gx, gy, gz, stream, *vals) -- the contract of cache.py's `entry.launch`, which the generated
 * hit path calls with the values spelled out (no tuple is built) -- or launcher(gx, gy, gz, stream, vals). */
static PyObject *launcher_call(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
  Launcher *self = (Launcher *)callable;
  Py_ssize_t n = PyVectorcall_NARGS(nargsf);
  PyObject *const *vals;
  if (kwnames && PyTuple_GET_SIZE(kwnames))
    return PyErr_SetString(PyExc_TypeError, "launcher takes no keyword arguments"), (PyObject *)NULL;
  /* With one bound argument both forms have 5 arguments: a tuple there is the tuple form (a kernel
   * argument is never a tuple on this path: native.plan refuses tuple parameters). */
  if (n == 5 && PyTuple_Check(args[4]) && PyTuple_GET_SIZE(args[4]) == self->nargs)
    vals = ((PyTupleObject *)args[4])->ob_item;
  else if (n == 4 + self->nargs)
    vals = args + 4;
  else
    return PyErr_Format(PyExc_TypeError, "launcher takes (gx, gy, gz, stream, *vals) with %zd values", self->nargs);
  if (!load_driver()) return PyErr_Format(PyExc_RuntimeError, "%s", driver_err);
  int32_t g[3]; /* "iiiK": grid dims like an i32 argument, the stream like a u64 one */
  uint64_t stream;
  if (!convert('i', args[0], &g[0], 0) || !convert('i', args[1], &g[1], 1) || !convert('i', args[2], &g[2], 2) ||
      !convert('K', args[3], &stream, 3))
    return NULL;
  if (!launch_values(self, g, stream, vals)) return NULL;
  Py_RETURN_NONE;
}

static PyTypeObject LauncherType;

static int init_launcher_type(void) { /* field by field: C++ has no out-of-order designated initializers */
  LauncherType.tp_name = "_jitlab_native.Launcher";
  LauncherType.tp_basicsize = sizeof(Launcher);
  LauncherType.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL;
  LauncherType.tp_vectorcall_offset = offsetof(Launcher, vectorcall);
  LauncherType.tp_call = PyVectorcall_Call;
  LauncherType.tp_doc = "launcher(gx, gy, gz, stream, vals): launch one prepared Triton kernel";
  return PyType_Ready(&LauncherType);
}

/* make(function, num_warps, shared, codes, frozen, n_tail=2, device=0, warp_size=32) -> Launcher */
static PyObject *make(PyObject *mod, PyObject *args) {
  unsigned long long function;
  int num_warps, n_tail = 2, device = 0, warp_size = 32; /* HIP: 64 on CDNA (MI300X), 32 on RDNA */
  unsigned int shared;
  const char *codes;
  Py_ssize_t ncodes;
  PyObject *frozen;
  if (!PyArg_ParseTuple(args, "KiIy#O!|iii", &function, &num_warps, &shared, &codes, &ncodes, &PyTuple_Type,
                        &frozen, &n_tail, &device, &warp_size))
    return NULL;
  if (!load_driver()) return PyErr_Format(PyExc_RuntimeError, "%s", driver_err);
  if (PyTuple_GET_SIZE(frozen) != ncodes) return PyErr_Format(PyExc_ValueError, "frozen must have one item per code");
  if (num_warps < 1 || num_warps > 32 || n_tail < 0 || n_tail > 8 || !function || (warp_size != 32 && warp_size != 64))
    return PyErr_Format(PyExc_ValueError, "bad launch configuration");
  if (!ensure_context(device)) return NULL; /* frozen data_ptr() checks may need the driver */
  Launcher *self = PyObject_New(Launcher, &LauncherType);
  if (!self) return NULL;
  self->vectorcall = launcher_call;
  self->function = (CUfunction)(uintptr_t)function;
  self->block_x = (unsigned)warp_size * (unsigned)num_warps; /* Triton: blockDimX = warp_size * num_warps */
  self->shared = shared;
  self->device = device;
  self->nargs = ncodes;
  self->nparams = self->nlive = 0;
  memset(self->tmpl, 0, sizeof self->tmpl); /* the tail (global/profile scratch) stays NULL */
#ifdef JITLAB_BENCH_STOPS
  self->once_ready = 0;
#endif
  for (Py_ssize_t i = 0; i < ncodes; i++) {
    if (codes[i] == 'x') continue;
    if (self->nparams + n_tail >= MAX_PARAMS) { Py_DECREF(self); return PyErr_Format(PyExc_ValueError, "too many parameters"); }
    int slot = self->nparams++;
    PyObject *f = PyTuple_GET_ITEM(frozen, i);
    if (f == LIVE) {
      if (!strchr("PbhiLBHIKeEfd", codes[i])) { Py_DECREF(self); return PyErr_Format(PyExc_ValueError, "unknown type code %c", codes[i]); }
      Live *l = &self->live[self->nlive++];
      l->arg = (int32_t)i;
      l->slot = (int16_t)slot;
      l->code = codes[i];
    } else if (!convert(codes[i], f, &self->tmpl[slot], i)) { /* jitlab's assume_const: once */
      Py_DECREF(self);
      return NULL;
    }
  }
  self->nparams += n_tail;
  return (PyObject *)self;
}

/* param_sizes(function) -> tuple of the loaded kernel's parameter sizes, or None when the driver
 * has no cuFuncGetParamInfo (< 12.4). native.py checks them against the codes before trusting them. */
static PyObject *param_sizes(PyObject *mod, PyObject *arg) {
  unsigned long long function = PyLong_AsUnsignedLongLong(arg);
  if (PyErr_Occurred()) return NULL;
  if (!load_driver()) return PyErr_Format(PyExc_RuntimeError, "%s", driver_err);
  if (!cu.param_info) Py_RETURN_NONE;
  PyObject *out = PyList_New(0);
  for (size_t i = 0; out && i < MAX_PARAMS; i++) {
    size_t off = 0, size = 0;
    CUresult e = cu.param_info((CUfunction)(uintptr_t)function, i, &off, &size);
    if (e == CUDA_ERROR_INVALID_VALUE) break; /* past the last parameter */
    if (e != CUDA_SUCCESS) { Py_DECREF(out); Py_RETURN_NONE; } /* can't tell: native.py relies on the PTX */
    PyObject *s = PyLong_FromSize_t(size);
    if (!s || PyList_Append(out, s) < 0) Py_CLEAR(out);
    Py_XDECREF(s);
  }
  if (!out) return NULL;
  PyObject *t = PyList_AsTuple(out);
  Py_DECREF(out);
  return t;
}

/* driver_status() -> None when the driver loaded, else the reason (loads it on first call). */
static PyObject *driver_status(PyObject *mod, PyObject *unused) {
  if (load_driver()) Py_RETURN_NONE;
  return PyUnicode_FromString(driver_err);
}

/* The module-level entries every module built on this header exports (add make_keyer's from native_key.h). */
#define LAUNCHER_METHODS                                                                                 \
  {"make", make, METH_VARARGS, "make(function, num_warps, shared, codes, frozen, n_tail=2, device=0)"},  \
  {"param_sizes", param_sizes, METH_O, "sizes of a loaded CUfunction's parameters (None: unknown)"},     \
  {"driver_status", driver_status, METH_NOARGS, "None if the driver is usable, else why not"},

/* The launcher's module state (interned names, the LIVE sentinel, exported as `LIVE`), once the module
 * object exists: 0, or -1 with an error set. */
static int init_launcher_module(PyObject *m) {
  if (init_launcher_type() < 0) return -1;
  s_data_ptr = PyUnicode_InternFromString("data_ptr");
  s_is_cuda = PyUnicode_InternFromString("is_cuda");
  LIVE = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type); /* "read this slot from vals" */
  if (!s_data_ptr || !s_is_cuda || !LIVE) return -1;
  Py_INCREF(LIVE);
  return PyModule_AddObject(m, "LIVE", LIVE);
}

#endif /* JITLAB_NATIVE_LAUNCHER_H */
