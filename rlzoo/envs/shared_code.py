"""Let every NetHack instance of a process execute one copy of NetHack's machine code.

NetHack keeps its game in global variables, so NLE loads a private copy of libnethack.so per
environment (from a memfd) and reloads it on every reset. An actor stepping 64 environments thus
executes 64 copies of the same 2 MB of code, which evict each other from the CPU caches: a step
costs about four times what it costs with one environment. The code and read-only data of each
copy are byte for byte the file NLE copied, so after each load we map the file's own pages over
them. The instructions become one shared copy; globals, heap and stack stay private to each game.
"""
from __future__ import annotations

import ctypes
import mmap
import os
import struct
import sys
import warnings

from nle.nethack.nethack import DLPATH

from rlzoo.envs.deferred_signals import signals_deferred

_PAGE = mmap.PAGESIZE
_PT_LOAD, _PF_X, _PF_W = 1, 1, 2
_PROT_READ, _PROT_EXEC = 1, 4
_MAP_PRIVATE = 2
_MREMAP_MAYMOVE, _MREMAP_FIXED = 1, 2
_RTLD_LAZY, _RTLD_NOLOAD = 1, 4
_RTLD_DI_LINKMAP = 2


def _read_only_segments(path: str) -> list[tuple[int, int, int, int]]:
    """(address offset, length, file offset, protection) of the ELF file's non-writable PT_LOAD
    segments, page-aligned and clipped so no page is shared with a writable segment."""
    with open(path, "rb") as f:
        header = f.read(1 << 16)
    (phoff,) = struct.unpack_from("<Q", header, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", header, 0x36)
    loads = []
    for i in range(phnum):
        fields = struct.unpack_from("<IIQQQQQQ", header, phoff + i * phentsize)
        p_type, flags, offset, vaddr, _, filesz, memsz, _ = fields
        if p_type == _PT_LOAD:
            loads.append((flags, offset, vaddr, filesz, memsz))
    writable = [(v & -_PAGE, v + m) for flags, _, v, _, m in loads if flags & _PF_W]
    segments = []
    for flags, offset, vaddr, filesz, memsz in loads:
        if flags & _PF_W:
            continue
        start, end = vaddr & -_PAGE, vaddr + filesz
        # The loader maps whole pages of the file, unless it must zero a tail (memsz > filesz).
        end = (end + _PAGE - 1) & -_PAGE if memsz == filesz else end & -_PAGE
        for w_start, _ in writable:
            if start < w_start < end:
                end = w_start
        if end > start:
            protection = _PROT_READ | (_PROT_EXEC if flags & _PF_X else 0)
            segments.append((start, end - start, offset - (vaddr - start), protection))
    return segments


class _CodeSharer:
    """Maps the read-only segments of libnethack.so over each freshly loaded private copy."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        for name, restype, argtypes in (
            ("dlopen", ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_int]),
            ("dlinfo", ctypes.c_int, [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]),
            ("dlclose", ctypes.c_int, [ctypes.c_void_p]),
            ("mmap", ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]),
            ("munmap", ctypes.c_int, [ctypes.c_void_p, ctypes.c_size_t]),
            ("mremap", ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p]),
        ):  # fmt: skip
            function = getattr(libc, name)
            function.restype, function.argtypes = restype, argtypes
        self.libc = libc
        self.segments = _read_only_segments(DLPATH)
        self.fd = os.open(DLPATH, os.O_RDONLY | os.O_CLOEXEC)
        self.verified = False

    def _base_address(self, dlpath: str) -> int | None:
        with signals_deferred():  # a handler raising between dlopen and dlclose would keep the library loaded
            handle = self.libc.dlopen(dlpath.encode(), _RTLD_LAZY | _RTLD_NOLOAD)  # no load: only look it up
            if not handle:
                return None
            try:
                link_map = ctypes.c_void_p()
                if self.libc.dlinfo(handle, _RTLD_DI_LINKMAP, ctypes.byref(link_map)) != 0:
                    return None
                return ctypes.c_size_t.from_address(link_map.value).value  # link_map.l_addr, its first field
            finally:
                self.libc.dlclose(handle)

    def _copy_matches_file(self, base: int) -> bool:
        """Whether the loaded copy's read-only pages equal the file's (no text relocations, same file)."""
        for start, length, offset, _ in self.segments:
            if ctypes.string_at(base + start, length) != os.pread(self.fd, length, offset):
                return False
        return True

    def share(self, dlpath: str) -> bool:
        base = self._base_address(dlpath)
        if base is None:
            return False
        if not self.verified:
            if not self._copy_matches_file(base):
                raise _Unsupported("the loaded copy of libnethack.so differs from the file")
            self.verified = True
        for start, length, offset, prot in self.segments:
            # Map the file elsewhere first (a failure there leaves the copy untouched), then move the
            # mapping over the copy in one call.
            pages = self.libc.mmap(None, length, prot, _MAP_PRIVATE, self.fd, offset)
            if pages is None or pages == ctypes.c_void_p(-1).value:
                raise _Unsupported(f"mmap failed: {os.strerror(ctypes.get_errno())}")
            moved = self.libc.mremap(pages, length, length, _MREMAP_MAYMOVE | _MREMAP_FIXED, base + start)
            if moved != base + start:
                self.libc.munmap(pages, length)
                raise _Unsupported(f"mremap failed: {os.strerror(ctypes.get_errno())}")
        return True


class _Unsupported(RuntimeError):
    pass


_sharer: _CodeSharer | None = None
_disabled = sys.platform != "linux"


def share_nethack_code(dlpath: str) -> bool:
    """Make the libnethack.so copy loaded from `dlpath` run on the shared pages of the original file.

    Call after every NLE reset (NLE reloads its copy then). Returns whether the pages are shared; on
    a platform where this cannot work it warns once and leaves every copy as it is.
    """
    global _sharer, _disabled
    if _disabled:
        return False
    try:
        if _sharer is None:
            _sharer = _CodeSharer()
        return _sharer.share(dlpath)
    except (AttributeError, OSError, _Unsupported) as err:
        _disabled = True
        warnings.warn(f"NetHack environments keep private copies of their code ({err}); stepping many "
                      "environments per process is slower", stacklevel=2)
        return False
