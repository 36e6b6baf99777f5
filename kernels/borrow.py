"""Arrays without reference counting, for a user's hot loop.

Numba counts references to every array a function binds, with atomic
operations; in a loop that calls kernels once per event they cost more than
the work. :func:`borrow` returns the same arrays with that counting taken off.
"""

from numba.core import cgutils, types
from numba.extending import intrinsic


@intrinsic
def borrow(typingctx, value):
    """``value`` (an array, or a tuple or NamedTuple of arrays such as a
    :class:`~ringbook.kernels.book.Book`) without reference counting.

    A borrowed value is the same value (same memory, same type) whose arrays
    Numba does not count: take it once before the loop, use it inside, and
    never let it outlive the function (return it or store it): the caller's
    ``value`` is what keeps the memory alive.
    """
    def strip(context, builder, value_type, llvm_value):
        if isinstance(value_type, types.Array):
            array = context.make_array(value_type)(context, builder, value=llvm_value)
            array.meminfo = cgutils.get_null_value(array.meminfo.type)
            array.parent = cgutils.get_null_value(array.parent.type)
            return array._getvalue()
        if isinstance(value_type, types.BaseTuple):
            for index, member in enumerate(value_type.types):
                member_value = builder.extract_value(llvm_value, index)
                llvm_value = builder.insert_value(
                    llvm_value, strip(context, builder, member, member_value), index)
        return llvm_value

    def codegen(context, builder, signature, arguments):
        return strip(context, builder, signature.args[0], arguments[0])

    return value(value), codegen
