"""Data-parallel learners: each replica takes a share of every batch, gradients are summed.

Losses are sums over the batch, so the summed gradients of the shares equal the gradient of the
whole batch and an update with N learners equals the single-learner update.
"""
from __future__ import annotations

import socket

import torch
import torch.distributed as dist


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def init_process_group(rank: int, world_size: int, address: str, port: int, device: torch.device) -> None:
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://{address}:{port}", rank=rank, world_size=world_size)


def broadcast_parameters(model: torch.nn.Module) -> None:
    for tensor in model.state_dict().values():
        dist.broadcast(tensor, src=0)


def allreduce_gradients(model: torch.nn.Module) -> None:
    # One flat buffer: one collective call instead of one per parameter.
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()
