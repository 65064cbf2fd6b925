"""Start a new NetHack game without reloading NetHack.

NetHack keeps its game in global variables, so NLE starts every episode on a freshly loaded private
copy of libnethack.so: its reset ends the game (nle_end), unloads the copy (dlclose) and loads it
again (dlopen) before starting the next game (nle_start). The load dominates short episodes: the
loader maps the file, applies about 8,000 relocations and binds functions anew, and the kernel faults
in and later tears down the copy's pages.

A load yields the same bytes every time it lands at the same address. So the first load of each
environment's copy is kept, and the library's writable data as the loader left it (file contents,
relocations applied, static constructors not yet run) is recorded. NLE's own reset code still runs,
but its dlclose and dlopen of a kept copy are intercepted (through the slots by which NLE's Python
extension calls them) and do what unloading and loading do to the library's memory without unmapping
it:
- dlclose runs the library's finalizers (DT_FINI_ARRAY, DT_FINI), as the real dlclose does; they
  destroy the library's C++ statics, which own heap memory.
- dlopen writes the recorded bytes back over .data and .bss, then runs the library's initializers
  (DT_INIT, DT_INIT_ARRAY), which construct those statics again, as the real dlopen does.
The bytes left alone are the read-only segments and the relocated pointers the loader protects
(RELRO), which a game cannot change, and the slots of lazily bound functions, which hold either the
resolver stub or the function it resolves to: the same call either way. The game's heap, stack and
files are NLE's nle_end's business, which runs as before. Tests compare trajectories over many
resets with stock NLE, check that nothing of a played game survives into the next, and that memory
stays flat over thousands of resets.

Only the resets of environments that opt in (`env.fast_reset`) are intercepted: the slots point at
the hooks for the duration of such a reset alone, so closing an environment unloads its copy and
other NLE instances in the process load and unload as before. Each kept copy costs the 2,390 words
the loader relocated in its data (19 kB); the recorded file bytes (300 kB) are one object for all
copies.
"""
from __future__ import annotations

import contextlib
import ctypes
import struct
import sys
import warnings
from collections.abc import Callable, Iterator
from types import TracebackType

import numpy as np
from nle import _pynethack

from rlzoo.envs.elf_layout import (
    DT_FINI,
    DT_FINI_ARRAY,
    DT_FINI_ARRAYSZ,
    DT_INIT,
    DT_INIT_ARRAY,
    DT_INIT_ARRAYSZ,
    DT_REL,
    DT_RELR,
    DT_TEXTREL,
    WORD_RELOCATIONS,
    ElfLayout,
    read_elf_layout,
    subtract,
)  # fmt: skip

_RTLD_LAZY, _RTLD_NOLOAD = 1, 4
_RTLD_DI_LINKMAP = 2
# The loader passes (argc, argv, environ) to initializers; those of a library ignore them.
_VOID_FUNCTION = ctypes.CFUNCTYPE(None)


class _Unsupported(RuntimeError):
    pass


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    for name, restype, argtypes in (
        ("dlopen", ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_int]),
        ("dlinfo", ctypes.c_int, [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]),
        ("dlclose", ctypes.c_int, [ctypes.c_void_p]),
    ):
        function = getattr(libc, name)
        function.restype, function.argtypes = restype, argtypes
    return libc


def _load_base(libc: ctypes.CDLL, handle: int) -> int:
    link_map = ctypes.c_void_p()
    if libc.dlinfo(handle, _RTLD_DI_LINKMAP, ctypes.byref(link_map)) != 0:
        raise _Unsupported("dlinfo found no link map")
    return ctypes.c_size_t.from_address(link_map.value).value  # link_map.l_addr, its first field


def game_writable_ranges(layout: ElfLayout) -> list[tuple[int, int]]:
    """[start, end) of the data a game can change: what stays writable, less the slots of lazily
    bound functions (.got.plt), which only the loader writes."""
    plt_slots = layout.plt_slots()
    return subtract(layout.writable_ranges(), plt_slots) if plt_slots else layout.writable_ranges()


class _KeptCopy:
    """One loaded copy of libnethack.so, and how to bring its memory back to how loading left it."""

    def __init__(self, libc: ctypes.CDLL, path: bytes, handle: int) -> None:
        layout = read_elf_layout(path.decode())
        for tag, what in ((DT_REL, "REL relocations"), (DT_RELR, "RELR relocations"),
                          (DT_TEXTREL, "relocations in its code")):  # fmt: skip
            if tag in layout.dynamic:
                raise _Unsupported(f"the library has {what}")
        if layout.has_tls:
            raise _Unsupported("the library has thread-local variables")
        self.handle, self.base = handle, _load_base(libc, handle)
        ranges = game_writable_ranges(layout)
        # The file's bytes are the same for every copy of the library: one object serves them all.
        self.images = [(self.base + start, _images.setdefault(image, image))
                       for start, end in ranges for image in [layout.loaded_bytes(start, end)]]
        self.words, self.relocated_index, self.relocated = self._relocated_words(layout, ranges)
        self.initializers = self._functions(layout, DT_INIT, DT_INIT_ARRAY, DT_INIT_ARRAYSZ, finalizers=False)
        self.finalizers = self._functions(layout, DT_FINI, DT_FINI_ARRAY, DT_FINI_ARRAYSZ, finalizers=True)
        # Loaded: memory as the loader left it, every initializer run, no finalizer yet.
        self.restored, self.initialized, self.finalized = True, len(self.initializers), 0

    def _relocated_words(self, layout: ElfLayout, ranges: list[tuple[int, int]]) -> tuple[np.ndarray, ...]:
        """A view of the words from the first to the last one the loader relocated in `ranges`, the
        index of those words in it, and the values the loader wrote there. The values are read now,
        after the static constructors ran: those only construct objects the loader left zeroed."""
        offsets = np.concatenate([layout.relocations.offsets, layout.plt_relocations.offsets])
        types = np.concatenate([layout.relocations.types, layout.plt_relocations.types])
        inside = np.zeros(len(offsets), bool)
        for start, end in ranges:
            inside |= (offsets >= start) & (offsets < end)
        offsets, types = offsets[inside].astype(np.int64), types[inside]
        odd = ~np.isin(types, WORD_RELOCATIONS) | (offsets % 8 != 0)
        if odd.any():
            raise _Unsupported(f"relocation of type {types[odd][0]} at {offsets[odd][0]:#x}")
        if not len(offsets):
            return np.zeros(0, np.uint64), np.zeros(0, np.intp), np.zeros(0, np.uint64)
        low = int(offsets.min())
        count = (int(offsets.max()) - low) // 8 + 1
        words = np.ctypeslib.as_array((ctypes.c_uint64 * count).from_address(self.base + low))
        index = np.unique((offsets - low) // 8)
        return words, index, words[index].copy()

    def _functions(self, layout: ElfLayout, single: int, array: int, size: int,
                   finalizers: bool) -> list[Callable[[], None]]:
        """The library's initializers in the order the loader calls them, or its finalizers in the
        order dlclose calls them."""
        address, count = layout.function_array(array, size)
        in_array = list((ctypes.c_uint64 * count).from_address(self.base + address)) if count else []
        alone = [self.base + layout.dynamic[single]] if single in layout.dynamic else []
        pointers = in_array[::-1] + alone if finalizers else alone + in_array
        return [_VOID_FUNCTION(pointer) for pointer in pointers]

    # unload() and load() can be cut short by a signal handler's exception and called again: each
    # finalizer and initializer runs once per cycle, counted before it is called.
    def unload(self) -> None:
        """What dlclose does to the library's memory, short of unmapping it: run its finalizers,
        which destroy its C++ statics (freeing what they own)."""
        while self.finalized < len(self.finalizers):
            finalizer = self.finalizers[self.finalized]
            self.finalized += 1
            finalizer()
        self.restored, self.initialized = False, 0

    def load(self) -> None:
        """What dlopen does to the library's memory, short of mapping it: the bytes the loader
        wrote, then the initializers, which construct the C++ statics again."""
        if not self.restored:
            for address, image in self.images:
                ctypes.memmove(address, image, len(image))
            self.words[self.relocated_index] = self.relocated
            self.restored = True
        while self.initialized < len(self.initializers):
            initializer = self.initializers[self.initialized]
            self.initialized += 1
            initializer()
        self.finalized = 0


_images: dict[bytes, bytes] = {}


class _LoaderHooks:
    """Points the slots through which NLE's Python extension calls dlopen and dlclose at the hooks
    below, for the duration of one fast reset.

    NLE calls the hooks from C, and an exception must not make such a call fail: NLE would exit the
    process. A signal handler can raise at any point of Python code, the first line of a hook
    included (a Ctrl-C; rlzoo's step timeout, a SIGALRM); so the hooks are cffi callbacks, whose
    `onerror` still returns a result: it holds the exception until the reset is over and runs the
    hook again (close_copy and open_copy pick up where they were cut short). An exception that keeps
    coming back (an error of this module) turns fast resets off and the call falls back to the real
    one.
    """

    def __init__(self) -> None:
        import cffi

        self.libc = _libc()
        path = _pynethack.__file__
        layout = read_elf_layout(path)
        handle = self.libc.dlopen(path.encode(), _RTLD_LAZY | _RTLD_NOLOAD)
        if not handle:
            raise _Unsupported(f"{path} is not loaded")
        try:
            base = _load_base(self.libc, handle)
        finally:
            self.libc.dlclose(handle)
        self.slots: dict[str, ctypes.c_uint64] = {}
        for name in ("dlopen", "dlclose"):
            offset = layout.plt_slot(name)
            if offset is None or not any(start <= offset < end for start, end in layout.writable_ranges()):
                raise _Unsupported(f"NLE's extension has no writable slot for {name}")
            self.slots[name] = ctypes.c_uint64.from_address(base + offset)
        self.ffi = ffi = cffi.FFI()
        # Kept alive here: the slots point at them during resets.
        self.callbacks = {
            "dlopen": ffi.callback("void *(char *, int)", self._dlopen, onerror=self._dlopen_again),
            "dlclose": ffi.callback("int(void *)", self._dlclose, onerror=self._dlclose_again),
        }
        self.hooked = {name: int(ffi.cast("uintptr_t", callback)) for name, callback in self.callbacks.items()}
        self.originals = {name: slot.value for name, slot in self.slots.items()}
        self.resetting: FastReset | None = None  # None: the hooks pass every call on

    @contextlib.contextmanager
    def routing(self, resetting: FastReset) -> Iterator[None]:
        self.resetting = resetting
        try:
            for name, slot in self.slots.items():
                slot.value = self.hooked[name]
            yield
        finally:
            self._unhook(resetting)

    def _unhook(self, resetting: FastReset) -> None:
        """Give NLE its dlopen and dlclose back, even if a signal handler raises meanwhile."""
        for _ in range(_ATTEMPTS):
            try:
                for name, slot in self.slots.items():
                    slot.value = self.originals[name]
                self.resetting = None
                return
            except BaseException as err:  # noqa: BLE001
                resetting.hold(err)

    def _dlclose(self, handle: object) -> int:
        address = int(self.ffi.cast("uintptr_t", handle))
        resetting = self.resetting
        if resetting is not None and resetting.close_copy(address):
            return 0
        return self.libc.dlclose(address)

    def _dlopen(self, path: object, flags: int) -> object:
        name = self.ffi.string(path) if path != self.ffi.NULL else None
        resetting = self.resetting
        if resetting is not None and name == resetting.path:
            return self.ffi.cast("void *", resetting.open_copy(flags) or 0)
        return self.ffi.cast("void *", self.libc.dlopen(name, flags) or 0)

    def _dlclose_again(self, _type: type, err: BaseException, traceback: TracebackType) -> int:
        handle = traceback.tb_frame.f_locals["handle"]  # the hook's own frame: its arguments
        real = lambda: self.libc.dlclose(int(self.ffi.cast("uintptr_t", handle)))
        return self._again(err, lambda: self._dlclose(handle), real, unload_copy=False)

    def _dlopen_again(self, _type: type, err: BaseException, traceback: TracebackType) -> object:
        path, flags = traceback.tb_frame.f_locals["path"], traceback.tb_frame.f_locals["flags"]
        real = lambda: self.ffi.cast("void *", self.libc.dlopen(self.ffi.string(path), flags) or 0)
        return self._again(err, lambda: self._dlopen(path, flags), real, unload_copy=True)

    def _again(self, err: BaseException, hook: Callable[[], object], real: Callable[[], object],
               unload_copy: bool) -> object:
        """The result of the hook cut short by `err`, run again; if it keeps failing, give up and
        make the real call."""
        resetting = self.resetting
        for failure in range(_ATTEMPTS + 1):
            if resetting is not None:
                resetting.hold(err)
            if failure == _ATTEMPTS:
                break
            try:
                return hook()
            except BaseException as again:  # noqa: BLE001
                err = again
        if resetting is not None:
            resetting.give_up(unload_copy)
        return real()


_ATTEMPTS = 3
_hooks: _LoaderHooks | None = None
_disabled = sys.platform != "linux"


def _disable(err: BaseException) -> None:
    global _disabled
    if not _disabled:
        _disabled = True
        warnings.warn(f"NetHack environments reload NetHack at every reset ({err}); short episodes "
                      "are slower", stacklevel=3)


class FastReset:
    """Lets the resets of one NLE game (`nle.nethack.Nethack`) keep its loaded copy of NetHack."""

    def __init__(self, dlpath: str) -> None:
        global _hooks
        self.path = dlpath.encode()
        self.copy: _KeptCopy | None = None
        self.unloaded = False  # between NLE's dlclose and dlopen of the copy
        self.reloaded = True  # whether the last reset loaded the library anew
        self.held: BaseException | None = None
        if _hooks is None and not _disabled:
            try:
                _hooks = _LoaderHooks()
            except (AttributeError, ImportError, OSError, ValueError, struct.error, _Unsupported) as err:
                _disable(err)

    @contextlib.contextmanager
    def resetting(self) -> Iterator[None]:
        """Run the game's reset inside this: it ends the game and starts the next on the same copy."""
        self.reloaded, self.held = True, None
        if _disabled or _hooks is None:
            self.copy = None  # NLE unloads it in this reset
            yield
            return
        with _hooks.routing(self):
            yield
        if self.held is not None:
            err, self.held = self.held, None
            raise err

    def close_copy(self, handle: int) -> bool:
        """NLE's dlclose of `handle`: True if it was the kept copy, now unloaded in place."""
        copy = self.copy
        if copy is None or copy.handle != handle:
            return False
        if _load_base(_hooks.libc, handle) != copy.base:  # reloaded elsewhere outside a fast reset
            self.copy = None
            return False
        self.unloaded = True
        copy.unload()
        return True

    def open_copy(self, flags: int) -> int | None:
        """NLE's dlopen of this game's library."""
        copy = self.copy
        if flags & _RTLD_NOLOAD:  # NLE checks that its copy is gone before loading it
            if copy is None:
                return _hooks.libc.dlopen(self.path, flags)
            if not self.unloaded:  # a signal handler's exception cut NLE's dlclose call short
                self.close_copy(copy.handle)
            return None
        if copy is not None:
            copy.load()
            self.unloaded = self.reloaded = False
            return copy.handle
        # The first load. An attempt cut short by a signal may have loaded it already: a lookup finds
        # it then (and counts a reference, given back at once).
        handle = _hooks.libc.dlopen(self.path, flags | _RTLD_NOLOAD)
        if handle:
            _hooks.libc.dlclose(handle)
        else:
            handle = _hooks.libc.dlopen(self.path, flags)
        if handle and not _disabled:
            try:
                self.copy = _KeptCopy(_hooks.libc, self.path, handle)
            except (_Unsupported, ValueError, struct.error) as err:
                _disable(err)
        return handle

    def hold(self, err: BaseException) -> None:
        """Keep the first exception raised inside NLE's reset, to raise it once the reset is over."""
        self.held = self.held or err

    def give_up(self, unload_copy: bool) -> None:
        """Stop keeping copies (NLE reloads from now on); unload this game's copy for real if NLE
        already closed it."""
        _disable(self.held or RuntimeError("repeated errors during a reset"))
        copy, self.copy = self.copy, None
        if unload_copy and copy is not None and self.unloaded:
            _hooks.libc.dlclose(copy.handle)
