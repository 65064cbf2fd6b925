"""Holding Python's signal handlers off a short critical section.

A Python signal handler may raise at almost any bytecode of the main thread, e.g. the step-time
alarm or Ctrl-C. Code that takes a reference to NetHack's loaded library (dlopen) must give it back
(dlclose): a handler raising in between would leave the library loaded for good, and NLE aborts the
process when it next finds its copy still loaded. Blocking the signals is not enough (another thread,
torch's for one, takes them and the main thread still runs the handler), so `signals_deferred()`
swaps every Python handler for one that only notes the signal, and raises the noted signals again
once the section is over, when the real handlers run.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Iterator


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # Python runs signal handlers in the main thread only: nothing can interrupt here
        return
    noted: list[int] = []
    swapped: dict[int, Any] = {}
    try:
        for sig in signal.valid_signals():
            if callable(signal.getsignal(sig)):
                swapped[sig] = signal.signal(sig, lambda signum, _frame: noted.append(signum))
        yield
    finally:
        for sig, handler in swapped.items():
            signal.signal(sig, handler)
        for signum in noted:
            signal.raise_signal(signum)
