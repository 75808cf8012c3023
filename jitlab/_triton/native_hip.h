/* The HIP driver layer of jitlab's native launcher. native_launcher_hip.c defines JITLAB_HIP and
 * includes native_launcher.c, which then includes this instead of its CUDA block: the per-call code
 * (argument conversion, pointer checks, frozen slots, the parameter array) is the same source.
 *
 * What Triton's HIP launcher does per call (triton/backends/amd/driver.py make_launcher, 3.5/3.6), and
 * how this layer matches it:
 *  - hipModuleLaunchKernel(function, grid, warp_size * num_warps, 1, 1, shared, stream, params, 0), with
 *    every non-constexpr argument then global_scratch and profile_scratch (NULL): the same;
 *  - entry points resolved with hipGetProcAddress at the HIP_VERSION of the headers Triton ships, from
 *    the libamdhip64.so Triton's driver found (hip.py passes its path through use_driver()): the same;
 *  - no context handling (HIP has no context to make current, Triton's HIP launcher does none): the same;
 *  - hipPointerGetAttribute(DEVICE_POINTER) on data_ptr() values: on hipErrorInvalidValue the same
 *    ValueError and hipGetLastError() to clear it. We skip it for objects whose is_cuda is True (torch's
 *    ROCm tensors say so), as the CUDA build does; another failure raises (Triton reads an unset value);
 *  - errors: RuntimeError("Triton Error [HIP]:  Code: N, Messsage: S"), Triton's text, typo included;
 *  - empty grid: Triton skips when the int product gx*gy*gz == 0; we skip when a dimension is 0, which
 *    differs only where that product overflows (undefined in C).
 * The C names the shared code uses (CUfunction, CUDA_SUCCESS, cu.launch, ...) are given HIP meanings here. */
#define __HIP_PLATFORM_AMD__
#include <hip/hip_runtime_api.h>

#define MODULE_NAME _jitlab_native_hip
#define GRID_EMPTY(g) ((g)[0] == 0 || (g)[1] == 0 || (g)[2] == 0)

typedef hipFunction_t CUfunction;
typedef hipStream_t CUstream;
typedef hipError_t CUresult;
typedef hipDeviceptr_t CUdeviceptr;
typedef hipPointer_attribute CUpointer_attribute;
#define CUDA_SUCCESS hipSuccess
#define CUDA_ERROR_INVALID_VALUE hipErrorInvalidValue
#define CU_POINTER_ATTRIBUTE_DEVICE_POINTER HIP_POINTER_ATTRIBUTE_DEVICE_POINTER

static struct {
  CUresult (*launch)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, CUstream,
                     void **, void **);
  CUresult (*ptr_attr)(void *, CUpointer_attribute, CUdeviceptr);
  CUresult (*param_info)(CUfunction, size_t, size_t *, size_t *); /* HIP has no such query: stays NULL */
  hipError_t (*hip_ptr_attr)(void *, hipPointer_attribute, hipDeviceptr_t);
  const char *(*err_str)(hipError_t);
  hipError_t (*last_error)(void);
} cu;
static int driver_state = 0; /* 0 untried, 1 loaded, -1 failed (reason in driver_err) */
static char driver_err[512];
static char driver_path[4096];

/* hipPointerGetAttribute, plus Triton's `(void)hipGetLastError()` after hipErrorInvalidValue. */
static hipError_t pointer_attribute(void *data, hipPointer_attribute attr, hipDeviceptr_t p) {
  hipError_t e = cu.hip_ptr_attr(data, attr, p);
  if (e == hipErrorInvalidValue) (void)cu.last_error();
  return e;
}

/* Load libamdhip64 once (always under the GIL), as Triton's initSymbolTable. Returns 1 when usable. */
static int load_driver(void) {
  if (driver_state) return driver_state > 0;
  if (!driver_path[0]) /* not latched: use_driver() may still choose the library */
    return snprintf(driver_err, sizeof driver_err, "no libamdhip64.so path (hip.py passes the one Triton found)"), 0;
  void *h = dlopen(driver_path, RTLD_LAZY | RTLD_LOCAL);
  if (!h) return snprintf(driver_err, sizeof driver_err, "cannot dlopen %.300s: %.150s", driver_path, dlerror()), driver_state = -1, 0;
  hipError_t (*get_proc)(const char *, void **, int, uint64_t, hipDriverProcAddressQueryResult *);
  if (!(*(void **)&get_proc = dlsym(h, "hipGetProcAddress")))
    return snprintf(driver_err, sizeof driver_err, "%.400s lacks hipGetProcAddress", driver_path), driver_state = -1, 0;
  hipDriverProcAddressQueryResult status;
#define SYM(field, name)                                                                                     \
  if (get_proc(name, (void **)&cu.field, HIP_VERSION, 0, &status) != hipSuccess || !cu.field) {              \
    snprintf(driver_err, sizeof driver_err, "cannot get address for '%s' from %.400s", name, driver_path);       \
    driver_state = -1;                                                                                       \
    return 0;                                                                                                \
  }
  SYM(launch, "hipModuleLaunchKernel") SYM(hip_ptr_attr, "hipPointerGetAttribute")
  SYM(err_str, "hipGetErrorString") SYM(last_error, "hipGetLastError")
#undef SYM
  cu.ptr_attr = pointer_attribute;
  driver_state = 1;
  return 1;
}

/* Triton's HIP gpuAssert: RuntimeError("Triton Error [HIP]:  Code: %d, Messsage: %s"). Returns 0. */
static int cuda_error(CUresult e) {
  const char *s = cu.err_str ? cu.err_str(e) : NULL;
  PyErr_Format(PyExc_RuntimeError, "%s Code: %d, Messsage: %s", "Triton Error [HIP]: ", (int)e, s ? s : "");
  return 0;
}

static int ensure_context(int device) { return (void)device, 1; }

/* use_driver(path): the libamdhip64.so to load (Triton's _get_path_to_hip_runtime_dylib); before the first make(). */
static PyObject *use_driver(PyObject *mod, PyObject *arg) {
  const char *p = PyUnicode_AsUTF8(arg);
  if (!p) return NULL;
  if (driver_state) return PyErr_Format(PyExc_RuntimeError, "the HIP runtime is already chosen (%s)", driver_path);
  if (strlen(p) >= sizeof driver_path) return PyErr_Format(PyExc_ValueError, "path too long");
  strcpy(driver_path, p);
  Py_RETURN_NONE;
}
#define DRIVER_METHODS {"use_driver", use_driver, METH_O, "use_driver(path): the libamdhip64.so to load"},
