"""The one place that holds ringbook's jit options.

Every kernel is decorated with :data:`kernel`; no decorator spells its own
options, so caching, the GIL and floating-point semantics are the same across
the code base.
"""

import numba
from numba.core import errors, types
from numba.core.registry import CPUDispatcher

#: ``cache``: the first compile is slow, later processes load machine code from
#: ``__pycache__``. ``nogil``: kernels run in worker threads. ``fastmath`` off:
#: results must match the references exactly. ``error_model='numpy'``: no
#: Python exception machinery in arithmetic; kernels check what matters themselves.
JIT_OPTIONS = dict(cache=True, nogil=True, fastmath=False, error_model="numpy")


class KernelDispatcher(CPUDispatcher):
    """Numba's dispatcher, compiling a call from other jitted code for the plain types of its
    arguments first.

    Numba types a constant argument (``side=0``, ``True``) as a literal and compiles the callee
    again for each literal it is called with; across the kernels that is a third of all
    compiles. Compiled once for ``int64`` and ``bool``, a call with a constant still inlines and
    folds it wherever LLVM inlines the callee. A kernel whose typing needs the literal (a
    ``numba.literally`` or a constant index into a heterogeneous tuple) is compiled for it as
    before.
    """

    def get_call_template(self, args, kws):
        plain_args = tuple(types.unliteral(arg) for arg in args)
        plain_kws = {name: types.unliteral(arg) for name, arg in kws.items()}
        if plain_args != tuple(args) or plain_kws != kws:
            try:
                return super().get_call_template(plain_args, plain_kws)
            except (errors.TypingError, errors.ForceLiteralArg):
                pass  # typing needs the literal: compile for it
        return super().get_call_template(args, kws)


def _njit(**options):
    """``numba.njit(**options)`` that makes a :class:`KernelDispatcher`."""
    build = numba.njit(**{**options, "cache": False})

    def decorate(function):
        built = build(function)
        if not isinstance(built, CPUDispatcher):
            return built  # NUMBA_DISABLE_JIT: the Python function itself
        dispatcher = KernelDispatcher(built.py_func, locals=built.locals,
                                      targetoptions=built.targetoptions)
        if options.get("cache"):
            dispatcher.enable_caching()
        return dispatcher

    return decorate


#: Decorator for every kernel: ``@kernel``.
kernel = _njit(**JIT_OPTIONS)

#: Decorator for a kernel that takes a user's function as an argument (a
#: replay calling a callback): Numba keys such a compilation on the callback's
#: type, which is new in every process, so a disk cache would only grow.
#: The same options as :data:`kernel`, without ``cache``.
kernel_with_callback = _njit(**{**JIT_OPTIONS, "cache": False})

#: Decorator for a small internal kernel that Numba inlines into its callers
#: (its IR, not just its machine code): no call on a hot path, so no
#: reference counting around one. Costs compile time in each caller.
inline_kernel = _njit(**JIT_OPTIONS, inline="always")

#: Decorator for a hot kernel that users call once per message from their own
#: loops (:func:`ringbook.kernels.ring.try_write`): LLVM inlines its machine code into
#: each caller. A call passes every array as seven words, most of them stored
#: on the stack; across cores those stores fill the store buffer while a
#: store to the ring waits for its cache line, and the producer stalls.
#: Unlike :data:`inline_kernel`, this inlines after reference counting is
#: settled, so it adds none.
llvm_inline_kernel = _njit(**JIT_OPTIONS, forceinline=True)
