"""Ray plumbing: joining or starting a cluster, and learner replicas for `runtime.learners > 1`."""
from __future__ import annotations

import os
import secrets
import socket
import stat
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from rlzoo.config import available_cpus
from rlzoo.envs import EnvSpec


class RayConnectionError(RuntimeError):
    """The configured Ray cluster did not answer."""


class LearnerReplicaLost(RuntimeError):
    """A learner replica died (killed, out of memory, crashed): the update it was part of is lost."""


def connect(cfg: DictConfig) -> None:
    """Start a private local Ray instance on 127.0.0.1, or join `runtime.ray_address`.

    The caller shuts Ray down when its run ends (`ray.shutdown()`), so each run connects afresh; Ray's
    automatic `ray.init()` on a later Ray call stays off in this process.
    """
    import ray
    from ray._private import auto_init_hook

    # After the run's ray.shutdown(), a stray Ray call (ray.get on a stale handle, say) would start a
    # default cluster: no token, listening on every interface. Such a call fails instead.
    auto_init_hook.enable_auto_connect = False
    if ray.is_initialized():
        return
    address = cfg.runtime.ray_address
    if address is None:
        evaluator = cfg.eval.num_cpus if cfg.eval.interval_steps else 0
        _start_local(ray, num_cpus=max(cfg.runtime.num_actors + cfg.runtime.learners + evaluator, available_cpus()))
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


LOOPBACK = "127.0.0.1"
# One token per process: Ray's C++ side caches the first token it reads, so a second local run in the
# same process must present the same one.
_local_token: str | None = None


def _start_local(ray: Any, num_cpus: int) -> None:
    """A single-node Ray that only this process can reach: every listener on 127.0.0.1, token
    authentication on with a token that is never written to disk, files in a private directory."""
    global _local_token
    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
        raise RayConnectionError(
            f"RAY_AUTH_MODE={os.environ['RAY_AUTH_MODE']!r}: rlzoo's local Ray always uses token "
            "authentication (other users of this machine could otherwise run code in it); unset RAY_AUTH_MODE"
        )
    _local_token = _local_token or secrets.token_hex(32)
    temp_dir = _private_temp_dir()
    # Ray treats a loopback node IP as "not set" and replaces it by the host's address, so its gRPC
    # servers and agents listen on every interface; it keeps 127.0.0.1 only when multi-node clusters
    # are switched off (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0). The environment reaches every process
    # Ray starts (workers inherit it from the raylet); the constant covers this already-imported driver.
    # Ray turns token mode on by itself and, given RAY_AUTH_TOKEN, writes no ~/.ray/auth_token (which
    # it would create readable by everyone).
    overrides = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_TOKEN": _local_token}
    saved_env = {k: os.environ.get(k) for k in overrides}
    import ray._private.ray_constants as constants

    saved_cluster_flag = constants.ENABLE_RAY_CLUSTER
    os.environ.update(overrides)
    constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            _node_ip_address=LOOPBACK,
            _temp_dir=str(temp_dir / "r"),  # short: Ray's Unix socket paths must stay under 107 bytes
            logging_level="WARNING",
            log_to_driver=True,
        )
    finally:
        # A later ray.init(address=...) in this process must see the user's own settings again.
        constants.ENABLE_RAY_CLUSTER = saved_cluster_flag
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    node_ip = ray.util.get_node_ip_address()
    if node_ip != LOOPBACK:  # fail closed if a Ray upgrade changes how the node IP is chosen
        ray.shutdown()
        raise RayConnectionError(
            f"local Ray started on {node_ip} instead of {LOOPBACK}, so it would be reachable from the "
            "network; this Ray version needs another way to stay on loopback (see SECURITY.md)"
        )


def _private_temp_dir() -> Path:
    """/tmp/rlzoo-u<uid>, mode 0700: Ray makes its session, log and socket directories world-writable,
    so they go below a directory no other user can enter."""
    path = Path("/tmp") / f"rlzoo-u{os.getuid()}"
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise RayConnectionError(
            f"{path} must be a directory (not a link) owned by you with mode 0700, since Ray keeps its "
            "sockets and logs there; remove it or `chmod 700` it"
        )
    return path


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



class LearnerReplica:
    """Body of one learner replica actor; rank 0's weights and metrics are the group's."""

    def __init__(self, cfg: dict[str, Any], spec: EnvSpec, num_envs: int, rank: int, world_size: int,
                 init_method: str) -> None:
        from rlzoo.models.precision import resolve_device
        from rlzoo.runtime import distributed
        from rlzoo.runtime.learner import Learner

        cfg = OmegaConf.create(cfg)
        device = resolve_device(cfg.runtime.device)
        if device.type == "cuda":
            device = torch.device("cuda", 0)  # Ray gives each replica its own GPU as device 0
        distributed.init_process_group(rank, world_size, init_method, device)
        self.learner = Learner(cfg, spec, num_envs, device, rank=rank, world_size=world_size)

    def update(self, batch: dict[str, Any], env_steps: int) -> dict[str, float]:
        return self.learner.update(batch, env_steps)

    def pid(self) -> int:
        return os.getpid()

    def weights(self) -> dict[str, np.ndarray]:
        return self.learner.weights()

    def state_dict(self) -> dict[str, Any]:
        return self.learner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.learner.load_state_dict(state)

    def close(self) -> None:
        self.learner.close()


class RemoteLearners:
    """N learner replicas behind the `Learner` interface: each update goes to all of them."""

    def __init__(self, cfg: DictConfig, spec: EnvSpec, num_envs: int) -> None:
        import ray

        from rlzoo.runtime.distributed import free_port, local_init_method

        connect(cfg)
        self.ray = ray
        n = cfg.runtime.learners
        gpus = 1 if cfg.runtime.device != "cpu" and torch.cuda.is_available() else 0
        cls = ray.remote(num_cpus=1 if gpus == 0 else 0, num_gpus=gpus)(LearnerReplica)
        if cfg.runtime.ray_address is None:
            init_method = local_init_method()
        else:  # replicas may sit on several machines
            address = ray.util.get_node_ip_address()
            init_method = f"tcp://{address}:{free_port(address)}"
        plain = OmegaConf.to_container(cfg, resolve=True)
        self.replicas = [cls.remote(plain, spec, num_envs, rank, n, init_method) for rank in range(n)]
        self.version = 0

    def _get(self, refs: Any) -> Any:
        try:
            return self.ray.get(refs)
        except self.ray.exceptions.RayActorError as err:
            raise LearnerReplicaLost(f"a learner replica died ({type(err).__name__})") from None

    def update(self, batch: dict[str, Any], env_steps: int) -> dict[str, float]:
        ref = self.ray.put(batch)  # one copy in the object store, read by every replica
        metrics = self._get([r.update.remote(ref, env_steps) for r in self.replicas])[0]
        self.version += 1
        return metrics

    def weights(self) -> dict[str, np.ndarray]:
        return self._get(self.replicas[0].weights.remote())

    def state_dict(self) -> dict[str, Any]:
        return self._get(self.replicas[0].state_dict.remote())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._get([r.load_state_dict.remote(state) for r in self.replicas])
        self.version = int(state["version"])

    def pids(self) -> list[int]:
        return self._get([r.pid.remote() for r in self.replicas])

    def kill(self) -> None:
        """Stop every replica at once (the survivors of a lost one cannot finish its collective)."""
        for replica in self.replicas:
            self.ray.kill(replica, no_restart=True)

    def close(self, timeout_s: float = 60.0) -> None:
        """Close every replica. A replica lost by then (after a finished run's last checkpoint, which is
        written before the close) is reported, the others finish their own close first (bonus threads,
        annotator processes) and then all are stopped. An error raised inside a replica's close is
        raised here, after that."""
        refs = [r.close.remote() for r in self.replicas]
        self.ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        lost, failure = [], None
        for rank, ref in enumerate(refs):
            try:
                self.ray.get(ref, timeout=0)
            except (self.ray.exceptions.RayActorError, self.ray.exceptions.GetTimeoutError):
                lost.append(rank)  # died, or still closing after timeout_s
            except Exception as err:  # raised by the replica's own close
                failure = failure or err
        if lost:
            warnings.warn(f"learner replica(s) {lost} died or did not close within {timeout_s:g} s; stopping "
                          "all replicas", stacklevel=2)
            self.kill()
        if failure is not None:
            raise failure
