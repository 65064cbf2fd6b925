"""Learner replicas in spawned processes (gloo on CPU, NCCL with one GPU each), for the tests that N
learners make one's update."""
import multiprocessing as mp

import numpy as np
import torch

from rlzoo.envs import env_spec
from rlzoo.runtime import distributed
from rlzoo.runtime.learner import Learner


def _replica(rank, world_size, init_method, cfg, batch, updates, device_type, queue):
    torch.set_num_threads(1)
    device = torch.device("cuda", rank) if device_type == "cuda" else torch.device("cpu")
    distributed.init_process_group(rank, world_size, init_method, device)
    learner = Learner(cfg, env_spec(cfg.env), num_envs=batch.num_columns, device=device,
                      rank=rank, world_size=world_size)
    for step in range(updates):
        learner.update(batch, env_steps=step)
    if rank == 0:
        queue.put(learner.weights())  # numpy on the CPU: plain pickles
    torch.distributed.destroy_process_group()


def sharded_weights(cfg, batch, updates: int = 2, world_size: int = 2,
                    device_type: str = "cpu") -> dict[str, np.ndarray]:
    """The policy weights after `updates` updates on `batch` by `world_size` learner replicas, on the
    CPU or on one CUDA device per replica (`device_type`)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    init_method = distributed.local_init_method()
    procs = [ctx.Process(target=_replica, args=(r, world_size, init_method, cfg, batch, updates, device_type, queue))
             for r in range(world_size)]
    for p in procs:
        p.start()
    weights = queue.get(timeout=300)  # a replica that dies or hangs fails the test instead of stalling it
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return weights
