"""NLD-format datasets (Hambro et al. 2022, "Dungeons and Data"): a sqlite index over a directory of
ttyrecs, built by nle.dataset, which later streams the games from it.

Two layouts, the two NLD datasets:
- `nle`: NLE's own recordings (NLD-AA; `env.save_ttyrec_every`): `<dir>/<subdir>/nle.<pid>.xlogfile`
  beside `nle.<pid>.<episode>.ttyrec3.bz2`. Version 3 ttyrecs carry the keypress of every frame.
  Only games with a line in an xlogfile are indexed, i.e. finished games: an episode still running
  when its environment closed has none.
- `altorg`: games from alt.org (NLD-NAO): `<dir>/<player>/<date>.ttyrec.bz2`, `<dir>/xlogfile.*` and
  `<dir>/blacklist.txt`. Version 1 ttyrecs: screens only, no keypresses.
"""
from __future__ import annotations

import bz2
import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import nle.dataset as nld

LAYOUTS = ("nle", "altorg")
_READ_CHUNK = 1 << 20  # compressed bytes per read when checking a file
_MAX_OUTPUT = 1 << 24  # decompressed bytes held at once when checking a file
INDEX_FILE = "ttyrecs.db"  # the index build_dataset writes into the ttyrec directory by default
_BZ2_MAGIC = b"BZh"  # how every bz2 stream starts


@dataclass(frozen=True)
class NLDDataset:
    """One dataset of an nle.dataset sqlite index."""

    db_path: Path
    name: str
    root: Path  # the directory the indexed ttyrec paths are relative to
    ttyrec_version: int  # 1: screens only; 2: + keypresses; 3: + in-game score
    num_games: int

    @property
    def has_keypresses(self) -> bool:
        return self.ttyrec_version >= 2


def ttyrec_problem(path: Path) -> str | None:
    """Why nle's converter cannot read `path` in full (missing, empty, truncated, corrupt), or None.

    The converter reads the file's first bz2 stream and, on a truncated or corrupt one, stops
    without an error, so the game silently loses its frames; a missing file raises mid-batch. A
    complete first stream is what it needs.
    """
    try:
        if path.stat().st_size == 0:
            return "empty"
        decompressor = bz2.BZ2Decompressor()
        with open(path, "rb") as f:
            while not decompressor.eof:
                chunk = b""
                if decompressor.needs_input:
                    chunk = f.read(_READ_CHUNK)
                    if not chunk:
                        return "truncated (its bz2 stream ends early)"
                decompressor.decompress(chunk, max_length=_MAX_OUTPUT)
    except FileNotFoundError:
        return "missing"
    except (OSError, EOFError) as err:
        return f"corrupt ({err})"
    return None


def ttyrec_header_problem(path: Path) -> str | None:
    """Why `path` cannot be a ttyrec at all (missing, empty, not bz2-compressed), or None: the
    check that stays cheap for a whole dataset (a header read per file; `ttyrec_problem` reads
    every byte)."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(_BZ2_MAGIC))
    except FileNotFoundError:
        return "missing"
    except OSError as err:
        return f"unreadable ({err})"
    if not head:
        return "empty"
    if head != _BZ2_MAGIC:
        return "not a bz2 file"
    return None


def build_dataset(
    ttyrec_dir: str | os.PathLike[str],
    db_path: str | os.PathLike[str] | None = None,
    name: str = "rlzoo",
    layout: str = "nle",
    overwrite: bool = False,
) -> NLDDataset:
    """Index the ttyrecs under `ttyrec_dir` with nle.dataset into a new sqlite file (default
    `<ttyrec_dir>/ttyrecs.db`, INDEX_FILE) and check that every indexed file is readable in full.

    Raises ValueError naming the directory or file for: a missing or empty directory, an unknown
    layout, a directory nle.dataset cannot index, no finished game, an empty or truncated ttyrec.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r} is not valid; allowed: {', '.join(LAYOUTS)}")
    root = Path(ttyrec_dir).absolute()
    if not root.is_dir():
        raise ValueError(f"ttyrec directory {root} does not exist")
    db_path = Path(db_path).absolute() if db_path is not None else root / INDEX_FILE
    if db_path.exists() and not overwrite:
        raise ValueError(f"dataset index {db_path} already exists; pass overwrite=True to rebuild it")
    _check_layout(root, layout)

    partial = db_path.with_name(db_path.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        nld.db.create(str(partial))
        add = nld.add_nledata_directory if layout == "nle" else nld.add_altorg_directory
        with contextlib.redirect_stdout(io.StringIO()):  # nle.dataset prints its progress
            add(str(root), name, str(partial))
        dataset = open_dataset(partial, name)
        if dataset.num_games == 0:
            raise ValueError(
                f"no finished game in {root}: nle.dataset indexes only games listed in an xlogfile "
                "(an episode still running when its environment closed has no line there)"
            )
        for path in indexed_files(dataset):
            problem = ttyrec_problem(path)
            if problem is not None:
                raise ValueError(f"ttyrec {path} is {problem}")
        partial.replace(db_path)
    finally:
        partial.unlink(missing_ok=True)
    return open_dataset(db_path, name)


def open_dataset(db_path: str | os.PathLike[str], name: str = "rlzoo") -> NLDDataset:
    """A dataset of an existing index."""
    db_path = Path(db_path)
    if not db_path.is_file():
        raise ValueError(f"dataset index {db_path} does not exist; build it with build_dataset")
    with contextlib.closing(nld.db.connect(str(db_path))) as conn:
        names = [row[0] for row in conn.execute("SELECT dataset_name FROM roots")]
        if name not in names:
            raise ValueError(f"dataset {name!r} is not in {db_path}; it holds {names}")
        return NLDDataset(
            db_path=db_path,
            name=name,
            root=Path(nld.db.get_root(name, conn)),
            ttyrec_version=int(nld.db.get_ttyrec_version(name, conn)),
            num_games=int(nld.db.count_games(name, conn)),
        )


def _check_layout(root: Path, layout: str) -> None:
    """The directory errors nle.dataset would report as an AssertionError or not at all."""
    if layout == "altorg":
        if not any(root.glob("*/*.ttyrec.bz2")):
            raise ValueError(f"{root} holds no alt.org ttyrecs (<player>/<date>.ttyrec.bz2)")
        for required in ("xlogfile.*", "blacklist.txt"):
            if not any(root.glob(required)):
                raise ValueError(f"{root} has no {required}, which an alt.org dataset needs")
        return
    xlogfiles = sorted(root.glob("*/*.xlogfile"))
    if not xlogfiles:
        raise ValueError(
            f"{root} holds no NLE recordings: expected <subdir>/nle.<pid>.xlogfile beside "
            "nle.<pid>.<episode>.ttyrec<version>.bz2 files (env.save_ttyrec_every writes them)"
        )
    for xlogfile in xlogfiles:
        ttyrecs = list(xlogfile.parent.glob(xlogfile.name.replace(".xlogfile", ".*.ttyrec*.bz2")))
        versions = {p.name.rsplit("ttyrec", 1)[1].removesuffix(".bz2") for p in ttyrecs}
        if not ttyrecs:
            raise ValueError(f"{xlogfile} has no ttyrecs beside it")
        if len(versions) > 1 or "" in versions:
            raise ValueError(
                f"{xlogfile.parent} mixes ttyrec versions {sorted(versions)}; NLE recordings are one "
                "version >= 2 (ttyrec2/ttyrec3)"
            )


def indexed_files(dataset: NLDDataset) -> list[Path]:
    """Every ttyrec file of the dataset, in game order."""
    with contextlib.closing(nld.db.connect(str(dataset.db_path))) as conn:
        rows = conn.execute(
            "SELECT ttyrecs.path FROM ttyrecs JOIN datasets ON ttyrecs.gameid = datasets.gameid "
            "WHERE datasets.dataset_name = ? ORDER BY ttyrecs.gameid, ttyrecs.part",
            (dataset.name,),
        )
        return [dataset.root / path for (path,) in rows]
