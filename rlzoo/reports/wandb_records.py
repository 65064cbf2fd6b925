"""Read an offline W&B run (`run-<id>.wandb`) without the W&B service: config, identity and history.

The file is W&B's transaction log: a 7-byte header, then LevelDB-style 32 KiB blocks of chunks
(4-byte CRC, 2-byte little-endian length, 1-byte type: full / first / middle / last), each record a
serialized `wandb_internal_pb2.Record`.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

_HEADER = b":W&B"
_HEADER_LEN = 7
_BLOCK = 32768
_CHUNK_HEADER = struct.Struct("<IHB")
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    run_id: str
    config: dict[str, Any] = field(default_factory=dict)
    group: str = ""
    job_type: str = ""
    name: str = ""
    tags: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)


def iter_records(path: Path) -> Iterator[bytes]:
    """Yield the raw records of a `.wandb` file; a record cut short by a crash ends the iteration."""
    data = path.read_bytes()
    if not data.startswith(_HEADER):
        raise ValueError(f"{path} is not a W&B run file (bad header)")
    pos, pending = _HEADER_LEN, b""
    while pos + _CHUNK_HEADER.size <= len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _CHUNK_HEADER.size:  # block trailer padding
            pos += left_in_block
            continue
        _crc, length, kind = _CHUNK_HEADER.unpack_from(data, pos)
        if kind == 0:  # zero padding to the end of the block
            pos += left_in_block
            continue
        chunk = data[pos + _CHUNK_HEADER.size: pos + _CHUNK_HEADER.size + length]
        if len(chunk) < length:
            return
        pos += _CHUNK_HEADER.size + length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
            pending = b""


def _item_key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def read_offline_run(path: Path) -> OfflineRun:
    """Parse one `run-<id>.wandb` file into its config (nested dicts) and history rows."""
    from wandb.proto import wandb_internal_pb2 as pb

    run = OfflineRun(run_id=path.stem.removeprefix("run-"))
    for raw in iter_records(path):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.group, run.job_type, run.name = r.run_group, r.job_type, r.display_name
            run.tags = list(r.tags)
            _apply_config(run.config, r.config.update)
        elif kind == "config":
            _apply_config(run.config, record.config.update)
        elif kind == "history":
            run.history.append({_item_key(i): json.loads(i.value_json) for i in record.history.item})
    run.config.pop("_wandb", None)
    return run


def _apply_config(config: dict[str, Any], updates: Any) -> None:
    for item in updates:
        keys = [item.key] if item.key else list(item.nested_key)
        node = config
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = json.loads(item.value_json)
