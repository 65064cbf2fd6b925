"""NetHack's birth date of a game, derived from the episode's seed instead of the wall clock.

NetHack stamps each new game with the time it starts (`ubirthday`, from time() in u_init) and reads
it later: shopkeepers' names (a taken name also costs a draw from the game's random generator), the
price a shopkeeper asks for unidentified glass, which letters of an eroded T-shirt or apron are worn
off, and the ant species of ant holes. NLE's fix_moon_phase derives the moon phase, Friday 13th,
night and midnight from the seed but leaves this date alone, so a seeded game still changes with the
day it is played: the same shop on level 2 has another shopkeeper on another day.

The date is written into the game right after each reset. The reset has already made the first
level; no first level of NetHack reads the date (shops start on level 2, ant holes on level 13), but
a MiniHack level file with a shop names its shopkeeper from the real date.
"""
from __future__ import annotations

import ctypes
import functools

from rlzoo.envs.deferred_signals import signals_deferred

# Birth dates span 2000-01-01 .. 2049-12-31, like NLE's seeded moon-phase dates.
_FIRST = 946_684_800  # 2000-01-01T00:00:00Z
_SPAN = 50 * 365 * 86_400
_RTLD_LAZY, _RTLD_NOLOAD = 1, 4


def birth_date(core_seed: int) -> int:
    """Seconds since 1970 for the game seeded with `core_seed`: a different date for each game,
    as the clock would give, but the same for the same seed."""
    return _FIRST + core_seed % _SPAN


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None)
    libc.dlopen.restype, libc.dlopen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_int]
    libc.dlsym.restype, libc.dlsym.argtypes = ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_char_p]
    libc.dlclose.argtypes = [ctypes.c_void_p]
    return libc


def birth_date_address(dlpath: str) -> int:
    """Where the game whose private copy of libnethack NLE loaded from `dlpath` keeps its birth date.
    Valid until that copy is unloaded: look it up again after each real reload."""
    libc = _libc()
    with signals_deferred():  # a handler raising between dlopen and dlclose would keep the library loaded
        handle = libc.dlopen(dlpath.encode(), _RTLD_LAZY | _RTLD_NOLOAD)  # only look it up: NLE loaded it
        if not handle:
            raise RuntimeError(f"NetHack's library {dlpath} is not loaded")
        try:
            address = libc.dlsym(handle, b"ubirthday")
        finally:
            libc.dlclose(handle)
    if not address:
        raise RuntimeError(f"{dlpath} has no ubirthday variable (an NLE other than 1.3?)")
    return address


def set_birth_date(address: int, seconds: int) -> None:
    """Write `seconds` as the birth date at `address` (from `birth_date_address`)."""
    ctypes.c_long.from_address(address).value = seconds  # a time_t
