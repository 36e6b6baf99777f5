"""The one place that holds ringbook's jit options.

Every kernel is decorated with :data:`kernel`; no decorator spells its own
options, so caching, the GIL and floating-point semantics are the same across
the code base.
"""

import numba

#: ``cache``: the first compile is slow, later processes load machine code from
#: ``__pycache__``. ``nogil``: kernels run in worker threads. ``fastmath`` off:
#: results must match the references exactly. ``error_model='numpy'``: no
#: Python exception machinery in arithmetic; kernels check what matters themselves.
JIT_OPTIONS = dict(cache=True, nogil=True, fastmath=False, error_model="numpy")

#: Decorator for every kernel: ``@kernel``.
kernel = numba.njit(**JIT_OPTIONS)

#: Decorator for a kernel that takes a user's function as an argument (a
#: replay calling a callback): Numba keys such a compilation on the callback's
#: type, which is new in every process, so a disk cache would only grow.
#: The same options as :data:`kernel`, without ``cache``.
kernel_with_callback = numba.njit(**{**JIT_OPTIONS, "cache": False})

#: Decorator for a small internal kernel that Numba inlines into its callers
#: (its IR, not just its machine code): no call on a hot path, so no
#: reference counting around one. Costs compile time in each caller.
inline_kernel = numba.njit(**JIT_OPTIONS, inline="always")

#: Decorator for a hot kernel that users call once per message from their own
#: loops (:func:`ringbook.kernels.ring.try_write`): LLVM inlines its machine code into
#: each caller. A call passes every array as seven words, most of them stored
#: on the stack; across cores those stores fill the store buffer while a
#: store to the ring waits for its cache line, and the producer stalls.
#: Unlike :data:`inline_kernel`, this inlines after reference counting is
#: settled, so it adds none.
llvm_inline_kernel = numba.njit(**JIT_OPTIONS, forceinline=True)
