"""Read a kernel's LLVM IR, to prove properties such as "allocates nothing".

Numba will not show the IR of code loaded from its cache. A kernel that this
process compiled for the signature (a cold run, or a test that ran it first) shows
its own IR; otherwise its Python function is compiled afresh, uncached. Either way
callees are linked in, so an allocation anywhere below the kernel shows up too.
"""

import numba

from ringbook.kernels.jit_options import JIT_OPTIONS


def _compiled_here(kernel, signature):
    """``kernel``'s own compile for ``signature`` if it has IR to show, else None.

    Compiling through the kernel itself (not a second dispatcher) lets a cold run
    compile each signature once: the test reads the IR of the machine code that runs.
    """
    if not isinstance(kernel, numba.core.registry.CPUDispatcher):
        return None
    signature = tuple(signature)
    kernel.compile(signature)  # a no-op when this process already has it
    library = kernel.overloads[signature].library
    if getattr(library, "_disable_inspection", True):
        return None  # loaded from the disk cache: machine code only
    return library


def llvm_ir(kernel, signature):
    """The optimised LLVM IR of ``kernel`` compiled for ``signature`` (a numba signature)."""
    library = _compiled_here(kernel, signature)
    if library is not None:
        return library.get_llvm_str()
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
