"""What a 64-bit little-endian ELF shared library's file says about the library once it is loaded.

The loadable segments, the part the loader makes read-only after relocating (RELRO), the dynamic
section's entries and the relocations. envs/fast_reset.py uses it to know which bytes of a loaded
copy of libnethack.so a game can change, what they held right after loading, and which functions the
loader runs after loading and before unloading.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np

PT_LOAD, PT_DYNAMIC, PT_TLS, PT_GNU_RELRO = 1, 2, 7, 0x6474E552
PF_W = 2
DT_NULL, DT_PLTRELSZ, DT_PLTGOT, DT_STRTAB, DT_SYMTAB, DT_RELA, DT_RELASZ, DT_RELAENT, DT_STRSZ = 0, 2, 3, 5, 6, 7, 8, 9, 10
DT_INIT, DT_FINI, DT_REL, DT_TEXTREL, DT_JMPREL = 12, 13, 17, 22, 23
DT_INIT_ARRAY, DT_FINI_ARRAY, DT_INIT_ARRAYSZ, DT_FINI_ARRAYSZ, DT_RELR = 25, 26, 27, 28, 36
R_X86_64_64, R_X86_64_GLOB_DAT, R_X86_64_JUMP_SLOT, R_X86_64_RELATIVE, R_X86_64_IRELATIVE = 1, 6, 7, 8, 37
# Relocation types that write one 8-byte word at their offset.
WORD_RELOCATIONS = (R_X86_64_64, R_X86_64_GLOB_DAT, R_X86_64_JUMP_SLOT, R_X86_64_RELATIVE, R_X86_64_IRELATIVE)
_EM_X86_64 = 62
_PAGE = 4096
_RELA = np.dtype([("offset", "<u8"), ("info", "<u8"), ("addend", "<i8")])


class UnsupportedElf(ValueError):
    """The file is not a library whose loaded image this module can describe."""


@dataclass(frozen=True)
class Segment:
    vaddr: int
    memsz: int
    offset: int
    filesz: int
    flags: int


@dataclass(frozen=True)
class Relocations:
    """One relocation table: where each entry writes (relative to the load base), its type, its symbol."""

    offsets: np.ndarray  # uint64
    types: np.ndarray  # uint32
    symbols: np.ndarray  # uint32, index into the dynamic symbol table


@dataclass(frozen=True)
class ElfLayout:
    loads: tuple[Segment, ...]
    relro: tuple[int, int] | None  # [start, end) made read-only after relocation, whole pages
    has_tls: bool
    dynamic: dict[int, int]  # tag -> value
    relocations: Relocations  # DT_RELA: data and the table of eagerly bound slots (.got)
    plt_relocations: Relocations  # DT_JMPREL: the lazily bound function slots (.got.plt)
    path: str  # the file, read again for symbol names and segment bytes

    def file_offset(self, vaddr: int) -> int:
        return _file_offset(self.loads, vaddr)

    def _read(self, vaddr: int, size: int) -> bytes:
        with open(self.path, "rb") as f:
            return os.pread(f.fileno(), size, self.file_offset(vaddr))

    def plt_slot(self, symbol: str) -> int | None:
        """Offset of the lazily bound slot through which the library calls `symbol`, if it has one."""
        plt = self.plt_relocations
        if not len(plt.offsets):
            return None
        # Symbol table entries are 24 bytes, their name's offset in the string table first.
        symbols = self._read(self.dynamic[DT_SYMTAB], 24 * (int(plt.symbols.max()) + 1))
        strings = self._read(self.dynamic[DT_STRTAB], self.dynamic[DT_STRSZ])
        wanted = symbol.encode() + b"\0"
        for offset, kind, index in zip(plt.offsets.tolist(), plt.types.tolist(), plt.symbols.tolist()):
            (name,) = struct.unpack_from("<I", symbols, 24 * index)
            if kind == R_X86_64_JUMP_SLOT and strings[name : name + len(wanted)] == wanted:
                return offset
        return None

    def plt_slots(self) -> tuple[int, int] | None:
        """[start, end) of the table of lazily bound slots (.got.plt): 3 reserved words, then one per
        DT_JMPREL relocation."""
        if DT_PLTGOT not in self.dynamic:
            return None
        start = self.dynamic[DT_PLTGOT]
        return start, start + 8 * (3 + len(self.plt_relocations.offsets))

    def function_array(self, address_tag: int, size_tag: int) -> tuple[int, int]:
        """(address, number of entries) of DT_INIT_ARRAY or DT_FINI_ARRAY; (0, 0) if absent."""
        if address_tag not in self.dynamic:
            return 0, 0
        return self.dynamic[address_tag], self.dynamic.get(size_tag, 0) // 8

    def writable_ranges(self) -> list[tuple[int, int]]:
        """[start, end) of what stays writable once loaded: the writable segments less RELRO."""
        ranges = [(s.vaddr, s.vaddr + s.memsz) for s in self.loads if s.flags & PF_W]
        return subtract(ranges, self.relro) if self.relro else ranges

    def loaded_bytes(self, start: int, end: int) -> bytes:
        """What the loader puts at [start, end) of a writable segment before relocating: the file's
        bytes, then zeros past the part the file holds (.bss)."""
        segment = next((s for s in self.loads if s.vaddr <= start and end <= s.vaddr + s.memsz), None)
        if segment is None:
            raise UnsupportedElf(f"[{start:#x}, {end:#x}) is not inside one segment")
        in_file = max(0, min(end, segment.vaddr + segment.filesz) - start)
        return (self._read(start, in_file) if in_file else b"") + bytes(end - start - in_file)


def _file_offset(loads: tuple[Segment, ...], vaddr: int) -> int:
    for segment in loads:
        if segment.vaddr <= vaddr < segment.vaddr + segment.filesz:
            return segment.offset + vaddr - segment.vaddr
    raise UnsupportedElf(f"address {vaddr:#x} is not in the file")


def _relocations(table: bytes) -> Relocations:
    entries = np.frombuffer(table, _RELA)
    info = entries["info"]
    return Relocations(entries["offset"].copy(), (info & 0xFFFFFFFF).astype(np.uint32),
                       (info >> np.uint64(32)).astype(np.uint32))


def read_elf_layout(path: str) -> ElfLayout:
    """Parse the library at `path`; raises UnsupportedElf for anything but an x86-64 ELF library."""
    with open(path, "rb") as f:
        fd = f.fileno()
        header = os.pread(fd, 64, 0)
        if header[:4] != b"\x7fELF" or header[4:6] != b"\x02\x01":
            raise UnsupportedElf(f"{path} is not a 64-bit little-endian ELF file")
        (machine,) = struct.unpack_from("<H", header, 0x12)
        if machine != _EM_X86_64:
            raise UnsupportedElf(f"{path} is not an x86-64 library (machine {machine})")
        (phoff,) = struct.unpack_from("<Q", header, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", header, 0x36)
        program_headers = os.pread(fd, phentsize * phnum, phoff)
        loads, relro, has_tls, dynamic_segment = [], None, False, None
        for i in range(phnum):
            p_type, flags, offset, vaddr, _, filesz, memsz, _ = struct.unpack_from("<IIQQQQQQ", program_headers, i * phentsize)
            segment = Segment(vaddr, memsz, offset, filesz, flags)
            if p_type == PT_LOAD:
                loads.append(segment)
            elif p_type == PT_GNU_RELRO:
                relro = (vaddr, (vaddr + memsz + _PAGE - 1) & -_PAGE)  # the loader protects whole pages
            elif p_type == PT_TLS:
                has_tls = True
            elif p_type == PT_DYNAMIC:
                dynamic_segment = segment
        if dynamic_segment is None:
            raise UnsupportedElf(f"{path} has no dynamic section")
        dynamic: dict[int, int] = {}
        for tag, value in struct.iter_unpack("<qQ", os.pread(fd, dynamic_segment.filesz, dynamic_segment.offset)):
            if tag == DT_NULL:
                break
            dynamic[tag] = value
        if dynamic.get(DT_RELAENT, _RELA.itemsize) != _RELA.itemsize:
            raise UnsupportedElf(f"{path} has relocation entries of {dynamic[DT_RELAENT]} bytes")
        tables = []
        for address_tag, size_tag in ((DT_RELA, DT_RELASZ), (DT_JMPREL, DT_PLTRELSZ)):
            present = address_tag in dynamic
            table = os.pread(fd, dynamic[size_tag], _file_offset(tuple(loads), dynamic[address_tag])) if present else b""
            tables.append(_relocations(table))
    return ElfLayout(tuple(loads), relro, has_tls, dynamic, tables[0], tables[1], path)


def subtract(ranges: list[tuple[int, int]], cut: tuple[int, int]) -> list[tuple[int, int]]:
    """The [start, end) ranges with the range `cut` taken out of them."""
    result = []
    for start, end in ranges:
        if cut[1] <= start or end <= cut[0]:
            result.append((start, end))
            continue
        if start < cut[0]:
            result.append((start, cut[0]))
        if cut[1] < end:
            result.append((cut[1], end))
    return result
