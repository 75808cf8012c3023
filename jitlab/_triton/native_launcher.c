/* The C extension module `_jitlab_native`: jitlab's launcher (native_launcher.h) and keyer
 * (native_key.h), built with the host C compiler by jitlab/_cbuild.py. See native_launcher.h. */
#include "native_launcher.h"
#include "native_key.h"

/* driver_status() -> None when libcuda loaded, else the reason (loads it on first call). */
static PyObject *driver_status(PyObject *mod, PyObject *unused) {
  if (load_driver()) Py_RETURN_NONE;
  return PyUnicode_FromString(driver_err);
}

static PyMethodDef methods[] = {
    {"make", make, METH_VARARGS, "make(function, num_warps, shared, codes, frozen, n_tail=2, device=0)"},
    {"param_sizes", param_sizes, METH_O, "sizes of a loaded CUfunction's parameters (None: unknown)"},
    {"driver_status", driver_status, METH_NOARGS, "None if libcuda is usable, else why not"},
    {"make_keyer", make_keyer, METH_VARARGS, "make_keyer(codes, tensor_type, spec): jitlab's key in C"},
    DRIVER_METHODS
    {NULL, NULL, 0, NULL}};
#define JL_STR(x) JL_STR_(x)
#define JL_STR_(x) #x
#define JL_INIT(name) JL_INIT_(name)
#define JL_INIT_(name) PyInit_##name
static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, JL_STR(MODULE_NAME), NULL, -1, methods};

PyMODINIT_FUNC JL_INIT(MODULE_NAME)(void) {
  if (init_launcher_type() < 0 || init_keyer_type() < 0) return NULL;
  s_data_ptr = PyUnicode_InternFromString("data_ptr");
  s_is_cuda = PyUnicode_InternFromString("is_cuda");
  LIVE = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type); /* "read this slot from vals" */
  PyObject *m = PyModule_Create(&moddef);
  if (!m || !s_data_ptr || !s_is_cuda || !LIVE) return NULL;
  Py_INCREF(LIVE);
  if (PyModule_AddObject(m, "LIVE", LIVE) < 0) return NULL;
  return m;
}
