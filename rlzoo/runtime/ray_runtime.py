"""Ray plumbing: joining or starting a cluster, and learner replicas for `runtime.learners > 1`."""
from __future__ import annotations

import socket
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from rlzoo.envs import EnvSpec


class RayConnectionError(RuntimeError):
    """The configured Ray cluster did not answer."""


def connect(cfg: DictConfig) -> None:
    """Start a private local Ray instance bound to 127.0.0.1, or join `runtime.ray_address`.

    The caller shuts Ray down when its run ends (`ray.shutdown()`), so each run connects afresh.
    """
    import ray

    if ray.is_initialized():
        return
    address = cfg.runtime.ray_address
    if address is None:
        ray.init(
            num_cpus=max(cfg.runtime.num_actors + cfg.runtime.learners, _local_cpus()),
            include_dashboard=False,
            _node_ip_address="127.0.0.1",  # nothing listens on other interfaces
            logging_level="WARNING",
            log_to_driver=True,
        )
        return
    # ray.init retries an unreachable address for minutes; one TCP probe answers in seconds.
    problem = _probe(address)
    if problem is None:
        try:
            ray.init(address=address, logging_level="WARNING")
            return
        except (ConnectionError, RuntimeError, TimeoutError) as err:
            problem = str(err)
    raise RayConnectionError(
        f"runtime.ray_address={address!r}: no Ray cluster answered there ({problem}); start one with "
        "`ray start --head`, or set runtime.ray_address=null for a local run"
    )


def _probe(address: str, timeout_s: float = 5.0) -> str | None:
    """None if something accepts TCP connections at `address` ("host:port" or "auto"), else why not."""
    if address == "auto":
        return None
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return "expected host:port"
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        return f"{type(err).__name__}: {err}"
    return None


def _local_cpus() -> int:
    import os

    return os.cpu_count() or 1


class LearnerReplica:
    """Body of one learner replica actor; rank 0's weights and metrics are the group's."""

    def __init__(self, cfg: dict[str, Any], spec: EnvSpec, num_envs: int, rank: int, world_size: int,
                 address: str, port: int) -> None:
        from rlzoo.runtime import distributed
        from rlzoo.runtime.learner import Learner, resolve_device

        cfg = OmegaConf.create(cfg)
        device = resolve_device(cfg.runtime.device)
        if device.type == "cuda":
            device = torch.device("cuda", 0)  # Ray gives each replica its own GPU as device 0
        distributed.init_process_group(rank, world_size, address, port, device)
        self.learner = Learner(cfg, spec, num_envs, device, rank=rank, world_size=world_size)

    def update(self, batch: dict[str, Any], env_steps: int) -> dict[str, float]:
        return self.learner.update(batch, env_steps)

    def weights(self) -> dict[str, np.ndarray]:
        return {k: v.numpy() for k, v in self.learner.weights().items()}

    def state_dict(self) -> dict[str, Any]:
        return self.learner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.learner.load_state_dict(state)


class RemoteLearners:
    """N learner replicas behind the `Learner` interface: each update goes to all of them."""

    def __init__(self, cfg: DictConfig, spec: EnvSpec, num_envs: int) -> None:
        import ray

        from rlzoo.runtime.distributed import free_port

        connect(cfg)
        self.ray = ray
        n = cfg.runtime.learners
        gpus = 1 if cfg.runtime.device != "cpu" and torch.cuda.is_available() else 0
        cls = ray.remote(num_cpus=1 if gpus == 0 else 0, num_gpus=gpus)(LearnerReplica)
        address = ray.util.get_node_ip_address()
        port = free_port(address)
        plain = OmegaConf.to_container(cfg, resolve=True)
        self.replicas = [cls.remote(plain, spec, num_envs, rank, n, address, port) for rank in range(n)]
        self.version = 0

    def update(self, batch: dict[str, Any], env_steps: int) -> dict[str, float]:
        ref = self.ray.put(batch)  # one copy in the object store, read by every replica
        metrics = self.ray.get([r.update.remote(ref, env_steps) for r in self.replicas])[0]
        self.version += 1
        return metrics

    def weights(self) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(v.copy()) for k, v in self.ray.get(self.replicas[0].weights.remote()).items()}

    def state_dict(self) -> dict[str, Any]:
        return self.ray.get(self.replicas[0].state_dict.remote())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ray.get([r.load_state_dict.remote(state) for r in self.replicas])
        self.version = int(state["version"])
