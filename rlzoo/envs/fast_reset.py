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

Only environments that opt in (`env.fast_reset`) are affected: a dlclose outside their reset (when
the environment is closed) is a real one, and other NLE instances in the process load and unload as
before. Each kept copy costs the 2,390 words the loader relocated in its data (19 kB); the recorded
file bytes (300 kB) are one object for all copies.
"""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import struct
import sys
import warnings
from collections.abc import Callable, Iterator

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
_DLOPEN = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int)
_DLCLOSE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)
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

    def unload(self) -> None:
        """What dlclose does to the library's memory, short of unmapping it: run its finalizers,
        which destroy its C++ statics (freeing what they own)."""
        for finalizer in self.finalizers:
            finalizer()

    def load(self) -> None:
        """What dlopen does to the library's memory, short of mapping it: the bytes the loader
        wrote, then the initializers, which construct the C++ statics again."""
        for address, image in self.images:
            ctypes.memmove(address, image, len(image))
        self.words[self.relocated_index] = self.relocated
        for initializer in self.initializers:
            initializer()


_images: dict[bytes, bytes] = {}


class _LoaderHooks:
    """Routes the dlopen and dlclose calls of NLE's Python extension through `dlopen` and `dlclose`
    below. They run inside NLE's C code: an exception must not escape them (NLE would get a failed
    call and exit the process), so any error falls back to the real call."""

    def __init__(self) -> None:
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
        self.originals = {name: slot.value for name, slot in self.slots.items()}
        # Kept alive here: the slots point at them.
        self.callbacks = {"dlopen": _DLOPEN(self.dlopen), "dlclose": _DLCLOSE(self.dlclose)}
        for name, slot in self.slots.items():
            slot.value = ctypes.cast(self.callbacks[name], ctypes.c_void_p).value
        # Before the interpreter tears down, NLE gets its own dlopen and dlclose back: an environment
        # closed during teardown then unloads its copy without calling into Python.
        atexit.register(self.remove)

    def remove(self) -> None:
        for name, slot in self.slots.items():
            slot.value = self.originals[name]

    def dlclose(self, handle: int) -> int:
        path, copy = _kept.get(handle, (None, None))
        if copy is not None and path in _resetting:
            try:
                copy.unload()
                _unloaded[path] = copy
                return 0
            except Exception as err:  # noqa: BLE001
                _disable(err)
        _kept.pop(handle, None)
        return self.libc.dlclose(handle)

    def dlopen(self, path: bytes | None, flags: int) -> int | None:
        copy = _unloaded.get(path) if path is not None else None
        if copy is not None:
            if flags & _RTLD_NOLOAD:  # NLE checks that its copy is gone before loading it
                return None
            del _unloaded[path]
            try:
                copy.load()
                _resetting[path].reloaded = False
                return copy.handle
            except Exception as err:  # noqa: BLE001
                _disable(err)
                _kept.pop(copy.handle, None)
                self.libc.dlclose(copy.handle)
        handle = self.libc.dlopen(path, flags)
        resetting = _resetting.get(path) if path is not None else None
        if handle and not flags & _RTLD_NOLOAD and resetting is not None:
            resetting.reloaded = True
            if not _disabled:
                try:
                    _kept[handle] = (path, _KeptCopy(self.libc, path, handle))
                except Exception as err:  # noqa: BLE001
                    _disable(err)
        return handle


_hooks: _LoaderHooks | None = None
_disabled = sys.platform != "linux"
_kept: dict[int, tuple[bytes, _KeptCopy]] = {}  # handle -> (path, copy), for copies loaded in a reset
_unloaded: dict[bytes, _KeptCopy] = {}  # path -> copy, between the dlclose and dlopen of a reset
_resetting: dict[bytes, FastReset] = {}  # path -> the environment whose reset is running


def _disable(err: Exception) -> None:
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
        self.reloaded = True  # whether the last reset loaded the library anew
        if _hooks is None and not _disabled:
            try:
                _hooks = _LoaderHooks()
            except (AttributeError, OSError, ValueError, struct.error, _Unsupported) as err:
                _disable(err)

    @contextlib.contextmanager
    def resetting(self) -> Iterator[None]:
        """Run the game's reset inside this: it ends the game and starts the next on the same copy."""
        if _disabled:
            self.reloaded = True
            yield
            return
        _resetting[self.path] = self
        try:
            yield
        finally:
            del _resetting[self.path]
