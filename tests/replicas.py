"""Learner replicas in spawned processes over gloo, for the tests that N learners make one's update."""
import multiprocessing as mp

import numpy as np
import torch

from rlzoo.envs import env_spec
from rlzoo.runtime import distributed
from rlzoo.runtime.learner import Learner


def _replica(rank, world_size, init_method, cfg, batch, updates, queue):
    torch.set_num_threads(1)
    distributed.init_process_group(rank, world_size, init_method, torch.device("cpu"))
    learner = Learner(cfg, env_spec(cfg.env), num_envs=batch.num_columns, device=torch.device("cpu"),
                      rank=rank, world_size=world_size)
    for step in range(updates):
        learner.update(batch, env_steps=step)
    if rank == 0:
        queue.put({k: v.numpy().copy() for k, v in learner.model.state_dict().items()})  # plain pickles
    torch.distributed.destroy_process_group()


def sharded_weights(cfg, batch, updates: int = 2, world_size: int = 2) -> dict[str, np.ndarray]:
    """The policy weights after `updates` updates on `batch` by `world_size` learner replicas."""
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    init_method = distributed.local_init_method()
    procs = [ctx.Process(target=_replica, args=(r, world_size, init_method, cfg, batch, updates, queue))
             for r in range(world_size)]
    for p in procs:
        p.start()
    weights = queue.get()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return weights
