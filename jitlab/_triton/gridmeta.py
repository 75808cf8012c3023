"""Which items of Triton's grid dict a grid function reads: what the native dispatcher passes a callable grid.

Triton calls a callable grid with `bound_args`, a fresh dict of every bound argument (JITFunction.run:
`grid = grid(bound_args)`). Building that dict for 20-60 arguments is most of what a grid lambda costs
on a hit, and most grids read one to three items of it by constant name. `reads(code)` proves, from the
grid function's bytecode, that the only things its code does with its first argument are

    meta["NAME"]            meta.get("NAME")        meta.get("NAME", <constant>)        "NAME" in meta

and returns those names; for such a grid a dict holding just those items behaves exactly as Triton's
(the same objects under the same names; a name the kernel lacks is a KeyError, a `.get` default or
False, as with Triton's dict). Anything else -- the argument stored, passed on, iterated, unpacked
(`**meta`), copied, compared, mutated, rebound, captured by a nested function or generator, reached
through `locals()`/`vars()`/`eval`/frames, a keyword or non-constant key -- returns None, and the
dispatcher passes Triton's whole dict. Unknown bytecode (another Python) also returns None.

What stays visible: code outside the grid that inspects the grid's frame while it runs (a debugger or
profiler: the dispatcher gives the whole dict while a trace or profile function is set; after an
exception it fills the dict the frame holds). The analysis is cached per code object.
"""

from __future__ import annotations

import dis
import functools
import types

#: At most this many names (dispatch.cpp's GRID_READS): a grid reading more gets the whole dict.
MAX_READS = 8
_LOADS = frozenset({"LOAD_FAST", "LOAD_FAST_CHECK", "LOAD_FAST_BORROW"})
#: Superinstructions loading two locals (3.13+): fine when the argument is the second (the top of the stack).
_LOADS2 = frozenset({"LOAD_FAST_LOAD_FAST", "LOAD_FAST_BORROW_LOAD_FAST_BORROW"})
_SUBSCR = frozenset({"BINARY_SUBSCR"})
_CONSTS = frozenset({"LOAD_CONST", "LOAD_SMALL_INT"})
_SKIP = frozenset({"EXTENDED_ARG", "NOP", "CACHE"})
#: Names through which a function can reach its own frame's locals.
_FRAME_ACCESS = frozenset({"locals", "vars", "eval", "exec", "_getframe", "currentframe", "f_locals", "breakpoint",
                           "stack", "getframeinfo", "settrace", "setprofile", "monitoring"})
_NOT_PLAIN = 0x20 | 0x80 | 0x100 | 0x200  # CO_GENERATOR, CO_COROUTINE, CO_ITERABLE_COROUTINE, CO_ASYNC_GENERATOR
_HASLOCAL = frozenset(dis.haslocal)


def _is_subscr(ins: dis.Instruction) -> bool:
    return ins.opname in _SUBSCR or (ins.opname == "BINARY_OP" and ins.argrepr.strip() == "[]")


def _const_str(ins: dis.Instruction) -> bool:
    return ins.opname == "LOAD_CONST" and type(ins.argval) is str


def _target(ins: dis.Instruction) -> bool:
    return bool(getattr(ins, "is_jump_target", True))


def _match(code: list[dis.Instruction], i: int, alone: bool = True) -> str | None:
    """The name read by the use of the grid argument loaded at code[i], or None if it is not one of the
    allowed shapes (no instruction of the shape after the load may be a jump target). `alone`: code[i]
    loads only the argument (not a superinstruction, whose other load sits below it on the stack)."""
    nxt = code[i + 1:i + 6]
    if len(nxt) >= 2 and _const_str(nxt[0]) and _is_subscr(nxt[1]) and not any(map(_target, nxt[:2])):
        return nxt[0].argval  # meta["NAME"]
    if (len(nxt) >= 3 and nxt[0].opname in ("LOAD_METHOD", "LOAD_ATTR") and nxt[0].argval == "get"
            and _const_str(nxt[1])):
        rest, nargs = nxt[2:], 1
        if rest and rest[0].opname in _CONSTS:  # meta.get("NAME", <constant>)
            rest, nargs = rest[1:], 2
        if rest and rest[0].opname == "PRECALL":  # 3.11
            if rest[0].arg != nargs:
                return None
            rest = rest[1:]
        used = len(nxt) - len(rest) + 1
        if rest and rest[0].opname == "CALL" and rest[0].arg == nargs and not any(map(_target, nxt[:used])):
            return nxt[1].argval
        return None
    if (alone and i > 0 and _const_str(code[i - 1]) and len(nxt) >= 1 and nxt[0].opname == "CONTAINS_OP"
            and not _target(code[i]) and not _target(nxt[0])):
        return code[i - 1].argval  # "NAME" in meta / not in
    return None


@functools.lru_cache(maxsize=1024)
def reads(code: types.CodeType) -> tuple[str, ...] | None:
    """The names a grid function with this code reads from its argument, or None when its code may do
    anything else with it (the dispatcher then passes Triton's whole dict)."""
    try:
        return _reads(code)
    except Exception:  # noqa: BLE001 - an analysis that fails proves nothing: the whole dict
        return None


def _reads(code: types.CodeType) -> tuple[str, ...] | None:
    if type(code) is not types.CodeType or code.co_argcount < 1 or code.co_flags & _NOT_PLAIN:
        return None
    meta = code.co_varnames[0]
    if meta in code.co_cellvars or meta in code.co_freevars or _FRAME_ACCESS & set(code.co_names):
        return None
    return _reads_in(meta, [x for x in dis.get_instructions(code) if x.opname not in _SKIP])


def _reads_in(meta: str, ins: list) -> tuple[str, ...] | None:
    """`reads` over a function's instructions (EXTENDED_ARG, NOP and CACHE left out), `meta` its first
    parameter: only LOAD_FAST-like instructions may name it, each in one of `_match`'s shapes."""
    names: list[str] = []
    for i, x in enumerate(ins):
        if x.opcode not in _HASLOCAL and x.opname not in _LOADS and x.opname not in _LOADS2:
            continue
        refs = x.argval if isinstance(x.argval, tuple) else (x.argval,)
        if meta not in refs:
            continue
        if x.opname in _LOADS and len(refs) == 1:
            alone = True
        elif x.opname in _LOADS2 and len(refs) == 2 and refs[1] == meta and refs[0] != meta:
            alone = False
        else:  # stored, deleted, or loaded below another value
            return None
        name = _match(ins, i, alone)
        if name is None:
            return None
        if name not in names:
            names.append(name)
    return tuple(names) if len(names) <= MAX_READS else None


# -- pure grids: what the bench's grid memo (dispatch.cpp AB_GRID_CACHE) may reuse ---------------------------
# A grid whose result is a function of the values it reads and nothing else can be evaluated once per
# distinct value set. `purity(code)` proves that from the bytecode: besides reading items of its argument
# (`reads`), the code only loads constants, its own temporaries, closure cells and global names (followed
# by attribute loads on modules), does arithmetic, comparisons and tuple/list building, jumps forward,
# and calls. Purity of the calls is checked per launch, not here: every global chain must resolve to a
# pure callable (`pure_callables()`: triton.cdiv, min, max, ...) or to an int, bool or None (then part of
# the key), every value read and every cell must be an int, bool or None (compared by type and value), so
# whatever the code computes from them is determined by them. Any other instruction: None.
_PURE_OPS = frozenset({
    "RESUME", "LOAD_CONST", "LOAD_SMALL_INT", "RETURN_CONST", "RETURN_VALUE", "STORE_FAST", "POP_TOP", "COPY",
    "SWAP", "PUSH_NULL", "PRECALL", "CALL", "BINARY_OP", "BINARY_SUBSCR", "COMPARE_OP", "IS_OP", "CONTAINS_OP",
    "UNARY_NEGATIVE", "UNARY_NOT", "UNARY_INVERT", "TO_BOOL", "BUILD_TUPLE", "BUILD_LIST", "LIST_TO_TUPLE",
    "POP_JUMP_IF_FALSE", "POP_JUMP_IF_TRUE", "POP_JUMP_IF_NONE", "POP_JUMP_IF_NOT_NONE", "JUMP_FORWARD",
    "POP_JUMP_FORWARD_IF_FALSE", "POP_JUMP_FORWARD_IF_TRUE", "POP_JUMP_FORWARD_IF_NONE",
    "POP_JUMP_FORWARD_IF_NOT_NONE", "COPY_FREE_VARS", "LOAD_DEREF", "LOAD_GLOBAL", "LOAD_ATTR", "LOAD_METHOD",
    "NOT_TAKEN", "POP_ITER",
}) | _LOADS | _LOADS2
#: At most this many closure cells and global chains (dispatch.cpp's GRID_KEYS bounds the key).
MAX_CELLS, MAX_CHAINS = 8, 8


@functools.lru_cache(maxsize=1024)
def purity(code: types.CodeType) -> tuple[tuple[tuple[str, ...], ...], int] | None:
    """(global chains, closure cells) of a pure grid's code, or None: see above. A chain is a global name
    and the attributes loaded from it, e.g. ("triton", "cdiv"); cells are the code's free variables in
    order (the function's __closure__)."""
    try:
        return _purity(code)
    except Exception:  # noqa: BLE001 - an analysis that fails proves nothing
        return None


def _purity(code: types.CodeType) -> tuple[tuple[tuple[str, ...], ...], int] | None:
    if reads(code) is None or code.co_argcount != 1 or code.co_kwonlyargcount or code.co_flags & 0x0C:
        return None  # (0x0C: *args, **kwargs)
    if code.co_cellvars or len(code.co_freevars) > MAX_CELLS:
        return None
    meta = code.co_varnames[0]
    ins = [x for x in dis.get_instructions(code) if x.opname not in _SKIP]
    chains: list[tuple[str, ...]] = []
    i = 0
    while i < len(ins):
        x = ins[i]
        if x.opname not in _PURE_OPS:
            return None
        if x.opname == "STORE_FAST" and x.argval == meta:
            return None
        if x.opname in ("LOAD_ATTR", "LOAD_METHOD"):  # only `meta.get` (reads() proved its shape)
            prev = ins[i - 1] if i else None
            if not (x.argval == "get" and prev is not None and prev.opname in _LOADS and prev.argval == meta):
                return None
        if x.opname == "LOAD_GLOBAL":
            chain = [x.argval]
            while i + 1 < len(ins) and ins[i + 1].opname in ("LOAD_ATTR", "LOAD_METHOD") and not _target(ins[i + 1]):
                i += 1
                chain.append(ins[i].argval)
            if tuple(chain) not in chains:
                chains.append(tuple(chain))
        i += 1
    return (tuple(chains), len(code.co_freevars)) if len(chains) <= MAX_CHAINS else None


def pure_callables() -> tuple:
    """The callables a pure grid may call (their results are functions of their int arguments), a tuple: the
    dispatcher compares by identity (hashing one may run Python code: Triton's JITCallable hashes its cache_key)."""
    import builtins

    out = {builtins.min, builtins.max, builtins.abs, builtins.int, builtins.bool, builtins.divmod, builtins.pow}
    try:
        import triton

        out |= {f for f in (getattr(triton, "cdiv", None), getattr(triton, "next_power_of_2", None)) if f is not None}
    except Exception:  # noqa: BLE001 - without Triton, builtins only
        pass
    return tuple(out)
