"""Embeddable Numba kernels over numpy arrays and scalars.

Every public kernel is a plain module-level ``@njit`` function with a stable
argument order, so research code can call it from its own ``@njit`` functions.
Nothing here starts a thread, opens a file or imports ``engine``.
"""

__version__ = "0.1.0"
