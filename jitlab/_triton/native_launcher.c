/* The C extension module `_jitlab_native`: jitlab's launcher (native_launcher.h) and keyer
 * (native_key.h), built with the host C compiler by jitlab/_cbuild.py. See native_launcher.h. */
#include "native_launcher.h"
#include "native_key.h"

static PyMethodDef methods[] = {
    LAUNCHER_METHODS
    {"make_keyer", make_keyer, METH_VARARGS, "make_keyer(codes, tensor_type, spec): jitlab's key in C"},
    DRIVER_METHODS
    {NULL, NULL, 0, NULL}};
#define JL_STR(x) JL_STR_(x)
#define JL_STR_(x) #x
#define JL_INIT(name) JL_INIT_(name)
#define JL_INIT_(name) PyInit_##name
static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, JL_STR(MODULE_NAME), NULL, -1, methods};

PyMODINIT_FUNC JL_INIT(MODULE_NAME)(void) {
  if (init_keyer_type() < 0) return NULL;
  PyObject *m = PyModule_Create(&moddef);
  if (!m || init_launcher_module(m) < 0) return NULL;
  return m;
}
