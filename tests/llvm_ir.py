"""Read a kernel's LLVM IR, to prove properties such as "allocates nothing".

Numba will not show the IR of code loaded from its cache, so the kernel's
Python function is compiled afresh, uncached; callees are linked in, so an
allocation anywhere below the kernel shows up too.
"""

import numba

from ringbook.kernels.jit_options import JIT_OPTIONS


def llvm_ir(kernel, signature):
    """The optimised LLVM IR of ``kernel`` compiled for ``signature`` (a numba signature)."""
    fresh = numba.njit(**{**JIT_OPTIONS, "cache": False})(kernel.py_func)
    fresh.compile(signature)
    return fresh.inspect_llvm(signature)


def allocation_calls(kernel, signature):
    """Lines of ``kernel``'s IR that call the Numba runtime's allocator."""
    return [line for line in llvm_ir(kernel, signature).splitlines()
            if "call" in line and "NRT_MemInfo_alloc" in line]


def function_body(kernel, signature):
    """The optimised IR of ``kernel``'s own function: its first definition, without
    the callees linked in after it."""
    code = llvm_ir(kernel, signature)
    body = code[code.index("define"):]
    return body[:body.index("\n}\n")]
