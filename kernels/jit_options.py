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
