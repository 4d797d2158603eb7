"""An uncaught C++ exception in a run of several processes, as one line and exit status 1.

When a peer process dies in the middle of a collective, gloo (JAX's CPU collectives) can
throw from its own transport thread, where nothing catches it: a receive on a link that is
still up meets bytes meant for another operation (``gloo::EnforceNotMet``, "Received data
size doesn't match expected size").  C++ then calls ``std::terminate``, whose default
handler prints the exception and aborts the whole process (status 134) before funcnet's
peer watch can say what happened.  :func:`install` replaces that handler, through the C++
runtime's own ``std::set_terminate``, with one that prints one line naming the exception's
type and ends the process with status 1: the finished checkpoints are on disk already.

It needs the C++ runtime that jaxlib links (libstdc++ on Linux, libc++ on macOS); where
that cannot be found the default handler stays.  The handler is Python, called through
ctypes on the terminating thread, which takes the GIL as any thread does; it is removed
(:func:`restore`) before the interpreter finalizes, when no thread may take the GIL.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_HANDLER = ctypes.CFUNCTYPE(None)
_installed: list = []  # (the runtime, the handler it had before, ours: kept alive)


def _runtime():
    """The C++ runtime library loaded in this process, or None."""
    for name in ("libstdc++.so.6", ctypes.util.find_library("c++"), "libc++.1.dylib"):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
            setter = lib._ZSt13set_terminatePFvvE  # std::set_terminate(void (*)())
        except (OSError, AttributeError):
            continue
        setter.restype, setter.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
        return lib
    return None


def _exception_type(lib) -> str:
    """The demangled type of the exception being handled (``gloo::EnforceNotMet``)."""
    try:
        current = lib.__cxa_current_exception_type
        current.restype = ctypes.c_void_p
        info = current()
        if not info:
            return "an error with no exception"
        # A std::type_info is its vtable pointer, then the mangled name.
        mangled = ctypes.c_char_p.from_address(info + ctypes.sizeof(ctypes.c_void_p)).value
        mangled = (mangled or b"?").lstrip(b"*")
        demangle = lib.__cxa_demangle
        demangle.restype = ctypes.c_void_p
        demangle.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p,
                             ctypes.POINTER(ctypes.c_int)]  # fmt: skip
        status = ctypes.c_int(-1)
        out = demangle(mangled, None, None, ctypes.byref(status))
        return ctypes.string_at(out).decode() if status.value == 0 and out else mangled.decode()
    except Exception:  # no way to read it: the line still says what happened
        return "an uncaught C++ exception"


def install(name: str, why: str) -> bool:
    """From now on an uncaught C++ exception prints ``"{name}: {type} in a C++ thread of
    JAX's runtime ({why}); this process stops too; finished checkpoints are on disk"`` and
    ends the process with status 1.  False where the C++ runtime was not found."""
    restore()
    lib = _runtime()
    if lib is None:
        return False

    def on_terminate():
        line = (f"{name}: {_exception_type(lib)} in a C++ thread of JAX's runtime ({why}); "
                "this process stops too; finished checkpoints are on disk\n")  # fmt: skip
        try:
            sys.stderr.flush()
            os.write(2, line.encode())
        finally:
            os._exit(1)

    ours = _HANDLER(on_terminate)
    before = lib._ZSt13set_terminatePFvvE(ctypes.cast(ours, ctypes.c_void_p))
    _installed.append((lib, before, ours))
    return True


def restore() -> None:
    """The handler from before :func:`install` back (no-op when none is installed)."""
    while _installed:
        lib, before, _ours = _installed.pop()
        lib._ZSt13set_terminatePFvvE(before)


__all__ = ["install", "restore"]
