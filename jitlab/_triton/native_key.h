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

/* The key item of bound value v under code c (a new reference). */
static PyObject *key_item(Keyer *k, char c, PyObject *v) {
  if (c != 'c') return runtime_item(k, c, v);
  PyTypeObject *t = Py_TYPE(v);
  if (v == Py_None || t == &PyLong_Type) return Py_NewRef(v);
  if (t == &PyBool_Type || t == &PyUnicode_Type) return PyTuple_Pack(2, (PyObject *)t, v);
  return PyObject_CallOneArg(k->cx, v);
}

/* The key of one call: the checked items of vals[0..k->n), then the ntail tail items as given. */
static PyObject *build_key(Keyer *k, PyObject *const *vals, PyObject *const *tail, Py_ssize_t ntail) {
  PyObject *key = PyTuple_New(k->nchecked + ntail);
  if (!key) return NULL;
  Py_ssize_t j = 0;
  for (Py_ssize_t i = 0; i < k->n; i++) {
    if (k->codes[i] == '-') continue;
    PyObject *item = key_item(k, k->codes[i], vals[i]);
    if (!item) return Py_DECREF(key), (PyObject *)NULL;
    PyTuple_SET_ITEM(key, j++, item);
  }
  for (Py_ssize_t i = 0; i < ntail; i++) PyTuple_SET_ITEM(key, j++, Py_NewRef(tail[i]));
  return key;
}

static int same_item(PyObject *a, PyObject *b) {
  return a == b ? 1 : PyObject_RichCompareBool(a, b, Py_EQ);
}

/* Whether the key of this call equals `key` (1), not (0), or an error (-1), without building it: the
 * common items (ints, None, bool, float, CUDA tensors) are compared in place. */
static int key_equals(Keyer *k, PyObject *const *vals, PyObject *const *tail, Py_ssize_t ntail, PyObject *key) {
  if (PyTuple_GET_SIZE(key) != k->nchecked + ntail) return 0;
  Py_ssize_t j = 0;
  for (Py_ssize_t i = 0; i < k->n; i++) {
    char c = k->codes[i];
    if (c == '-') continue;
    PyObject *v = vals[i], *want = PyTuple_GET_ITEM(key, j++);
    PyTypeObject *t = Py_TYPE(v);
    if (c != 'c' && v != Py_None && t == &PyLong_Type) { /* a runtime int: its class, no allocation */
      int overflow = 0;
      long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
      if (!overflow && x >= INT32_MIN && x <= INT32_MAX) {
        int specialize = c == 'r' || c == 'a', align = c == 'r' || c == 'u';
        int cls = !specialize ? 0 : x == 1 ? 1 : (align && (x & 15) == 0) ? 2 : 0;
        if (!PyLong_CheckExact(want) || PyLong_AsLong(want) != cls) return PyErr_Occurred() ? -1 : 0;
        continue;
      }
    }
#ifdef JITLAB_TORCH /* dispatch.cpp: a tensor's (dtype, aligned) compared in place */
    if (c != 'c' && (PyObject *)t == k->tensor_type) {
      int r = torch_item_equals(v, c == 'r' || c == 'u', want);
      if (r != -2) {
        if (r <= 0) return r;
        continue;
      }
    }
#endif
    if (c == 'c' && (t == &PyLong_Type || v == Py_None)) {
      int r = v == Py_None ? want == Py_None : PyLong_CheckExact(want) ? same_item(v, want) : 0;
      if (r <= 0) return r;
      continue;
    }
    if (c == 'c' && t == &PyFloat_Type) { /* want is (float, bits) (keys.float_bits): compared without Python */
      double x = PyFloat_AS_DOUBLE(v);
      unsigned long long bits = 0x7FF8000000000000ULL;
      if (x == x) memcpy(&bits, &x, 8);
      PyObject *wb = PyTuple_CheckExact(want) && PyTuple_GET_SIZE(want) == 2 ? PyTuple_GET_ITEM(want, 1) : NULL;
      if (!wb || PyTuple_GET_ITEM(want, 0) != (PyObject *)&PyFloat_Type || !PyLong_CheckExact(wb) ||
          PyLong_AsUnsignedLongLong(wb) != bits)
        return PyErr_Occurred() ? -1 : 0;
      continue;
    }
    if (c == 'c' && (t == &PyBool_Type || t == &PyUnicode_Type)) { /* want is (type, value) */
      int r = PyTuple_CheckExact(want) && PyTuple_GET_SIZE(want) == 2 && PyTuple_GET_ITEM(want, 0) == (PyObject *)t
                  ? same_item(v, PyTuple_GET_ITEM(want, 1)) : 0;
      if (r <= 0) return r;
      continue;
    }
    PyObject *item = key_item(k, c, v);
    if (!item) return -1;
    int r = same_item(item, want);
    Py_DECREF(item);
    if (r <= 0) return r;
  }
  for (Py_ssize_t i = 0; i < ntail; i++) {
    int r = same_item(tail[i], PyTuple_GET_ITEM(key, j++));
    if (r <= 0) return r;
  }
  return 1;
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
