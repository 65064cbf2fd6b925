"""Data-parallel learners: each replica takes a share of every minibatch, gradients are summed.

Losses are sums over the minibatch, or means weighted by each share's part of the minibatch (see
`rlzoo.algos.objective`), so the summed gradients of the shares equal the gradient of the whole
minibatch and an update with N learners equals the single-learner update.
"""
from __future__ import annotations

import os
import socket
import tempfile

import torch
import torch.distributed as dist


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def local_init_method() -> str:
    """Rendezvous through a file in a private folder: torch's TCP store would listen on every interface."""
    folder = tempfile.mkdtemp(prefix="rlzoo-dist-")  # mode 0700
    return f"file://{folder}/store"


def init_process_group(rank: int, world_size: int, init_method: str, device: torch.device) -> None:
    """`init_method` is `local_init_method()` on one machine, `tcp://head:port` across machines."""
    backend = "nccl" if device.type == "cuda" else "gloo"
    if init_method.startswith("file://"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # one machine: gloo's sockets stay on loopback
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size)


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


def allreduce_sum(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The sum of `tensor` over the replicas (a few statistics), computed on `device` (NCCL needs a
    GPU tensor), returned on the CPU."""
    on_device = tensor.to(device)
    dist.all_reduce(on_device, op=dist.ReduceOp.SUM)
    return on_device.cpu()
