/* jitlab's cache key, computed in C: the same items as jitlab/keys.py (the reference) and the
 * inline expressions of jitlab/guard.py, for the safe policy's many checks. Included by
 * native_launcher.c (one extension module).
 *
 * keyer(*tail, vals) -> tuple of the checked items of the tuple `vals`, then the tail items as given
 * (options, Triton state, device: codegen.KeySpec).
 * One code per bound argument:
 *   '-' not checked          'c' constexpr: the value if int/None, (type, value) for bool/str, else
 *                             keys.constexpr_item(value) (floats by repr, tuples element-wise)
 *   'r' runtime, specialize + align     'a' specialize, no align
 *   'u' no specialize, align            'v' neither
 * Runtime items: None -> None; bool -> "u1"; float -> "fp32"; int in i32 -> class 0/1/2 (plain,
 * ==1, %16==0 when specialized; range-only otherwise); torch.Tensor -> (dtype, aligned); anything
 * else (wide ints, tensor subclasses, odd types) -> keys.spec(value, specialize, align), which
 * raises keys.Unsupported for what jitlab does not key (the hit path then falls back to Triton). */

typedef struct {
  PyObject_HEAD
  vectorcallfunc vectorcall;
  Py_ssize_t n;
  char codes[MAX_PARAMS];
  Py_ssize_t nchecked;
  PyObject *tensor_type, *spec, *cx, *s_u1, *s_fp32, *s_dtype, *ints[3];
} Keyer;

static PyObject *runtime_item(Keyer *k, char code, PyObject *v) {
  int specialize = code == 'r' || code == 'a', align = code == 'r' || code == 'u';
  if (v == Py_None) return Py_NewRef(Py_None);
  PyTypeObject *t = Py_TYPE(v);
  if (t == &PyLong_Type) {
    int overflow = 0;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (!overflow && x >= INT32_MIN && x <= INT32_MAX) {
      int c = !specialize ? 0 : x == 1 ? 1 : (align && (x & 15) == 0) ? 2 : 0;
      return Py_NewRef(k->ints[c]);
    }
  } else if (t == &PyBool_Type) {
    return Py_NewRef(k->s_u1);
  } else if (t == &PyFloat_Type) {
    return Py_NewRef(k->s_fp32);
  } else if ((PyObject *)t == k->tensor_type) {
#ifdef JITLAB_TORCH /* dispatch.cpp: dtype and address through torch's C++ API, no method calls */
    PyObject *fast = torch_key_item(v, align);
    if (fast || PyErr_Occurred()) return fast;
#endif
    PyObject *dtype = PyObject_GetAttr(v, k->s_dtype);
    if (!dtype) return NULL;
    PyObject *aligned = Py_True;
    if (align) {
      PyObject *p = PyObject_CallMethodNoArgs(v, s_data_ptr);
      if (!p) return Py_DECREF(dtype), (PyObject *)NULL;
      unsigned long long a = PyLong_AsUnsignedLongLongMask(p);
      Py_DECREF(p);
      aligned = (a & 15) ? Py_False : Py_True;
    }
    PyObject *item = PyTuple_Pack(2, dtype, aligned);
    Py_DECREF(dtype);
    return item;
  }
  return PyObject_CallFunction(k->spec, "OOO", v, specialize ? Py_True : Py_False, align ? Py_True : Py_False);
}

/* The key of one call: the checked items of vals[0..k->n), then the ntail tail items as given. */
static PyObject *build_key(Keyer *k, PyObject *const *vals, PyObject *const *tail, Py_ssize_t ntail) {
  PyObject *key = PyTuple_New(k->nchecked + ntail);
  if (!key) return NULL;
  Py_ssize_t j = 0;
  for (Py_ssize_t i = 0; i < k->n; i++) {
    char c = k->codes[i];
    if (c == '-') continue;
    PyObject *v = vals[i], *item;
    if (c == 'c') {
      PyTypeObject *t = Py_TYPE(v);
      if (v == Py_None || t == &PyLong_Type) item = Py_NewRef(v);
      else if (t == &PyBool_Type || t == &PyUnicode_Type) item = PyTuple_Pack(2, (PyObject *)t, v);
      else item = PyObject_CallOneArg(k->cx, v);
    } else {
      item = runtime_item(k, c, v);
    }
    if (!item) return Py_DECREF(key), (PyObject *)NULL;
    PyTuple_SET_ITEM(key, j++, item);
  }
  for (Py_ssize_t i = 0; i < ntail; i++) PyTuple_SET_ITEM(key, j++, Py_NewRef(tail[i]));
  return key;
}

static PyObject *keyer_call(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
  Keyer *k = (Keyer *)callable;
  Py_ssize_t n = PyVectorcall_NARGS(nargsf);
  if (n < 1 || (kwnames && PyTuple_GET_SIZE(kwnames)) || !PyTuple_CheckExact(args[n - 1]) ||
      PyTuple_GET_SIZE(args[n - 1]) != k->n)
    return PyErr_Format(PyExc_TypeError, "keyer takes (*tail_items, values: tuple of %zd)", k->n);
  return build_key(k, ((PyTupleObject *)args[n - 1])->ob_item, args, n - 1);
}

static void keyer_dealloc(PyObject *o) {
  Keyer *k = (Keyer *)o;
  Py_XDECREF(k->tensor_type); Py_XDECREF(k->spec); Py_XDECREF(k->cx); Py_XDECREF(k->s_u1); Py_XDECREF(k->s_fp32);
  Py_XDECREF(k->s_dtype);
  for (int i = 0; i < 3; i++) Py_XDECREF(k->ints[i]);
  Py_TYPE(o)->tp_free(o);
}

static PyTypeObject KeyerType;

static int init_keyer_type(void) {
  KeyerType.tp_name = "_jitlab_native.Keyer";
  KeyerType.tp_basicsize = sizeof(Keyer);
  KeyerType.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL;
  KeyerType.tp_call = PyVectorcall_Call;
  KeyerType.tp_vectorcall_offset = offsetof(Keyer, vectorcall);
  KeyerType.tp_dealloc = keyer_dealloc;
  return PyType_Ready(&KeyerType);
}

/* make_keyer(codes: bytes, tensor_type, spec, constexpr_item) */
static PyObject *make_keyer(PyObject *mod, PyObject *args) {
  const char *codes;
  Py_ssize_t n;
  PyObject *tensor_type, *spec, *cx;
  if (!PyArg_ParseTuple(args, "y#OOO", &codes, &n, &tensor_type, &spec, &cx)) return NULL;
  if (n > MAX_PARAMS) return PyErr_Format(PyExc_ValueError, "at most %d arguments", MAX_PARAMS);
  Keyer *k = PyObject_New(Keyer, &KeyerType);
  if (!k) return NULL;
  k->vectorcall = keyer_call;
  k->n = n;
  k->nchecked = 0;
  for (Py_ssize_t i = 0; i < n; i++) {
    if (!codes[i] || !strchr("-cruav", codes[i])) {
      PyObject_Free(k);  /* no field holds a reference yet */
      return PyErr_Format(PyExc_ValueError, "bad key code %c", codes[i]);
    }
    k->codes[i] = codes[i];
    k->nchecked += codes[i] != '-';
  }
  k->tensor_type = Py_NewRef(tensor_type);
  k->spec = Py_NewRef(spec);
  k->cx = Py_NewRef(cx);
  k->s_u1 = PyUnicode_InternFromString("u1");
  k->s_fp32 = PyUnicode_InternFromString("fp32");
  k->s_dtype = PyUnicode_InternFromString("dtype");
  for (int i = 0; i < 3; i++) k->ints[i] = PyLong_FromLong(i);
  return (PyObject *)k;
}
