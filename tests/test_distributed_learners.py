"""Two CPU learner replicas (gloo) make exactly the update one learner makes on the whole batch."""

import pytest
import torch

from rlzoo.envs import env_spec
from rlzoo.runtime.learner import Learner
from rlzoo.runtime.rollout import RolloutWorker
from rlzoo.unroll import Unroll
from replicas import sharded_weights



@pytest.mark.integration
def test_two_learners_equal_one(compose):
    # float32: in bf16 the two shards' rounding differs from the full batch's beyond any tight tolerance.
    cfg = compose(["runtime.envs_per_actor=4", "runtime.num_actors=2", "runtime.batch_size=8",
                   "runtime.unroll_length=8", "algo.lr_decay=none", "runtime.precision=fp32"])
    spec = env_spec(cfg.env)
    batch = Unroll.concat([RolloutWorker(cfg, i, spec).rollout().unroll for i in range(2)])

    single = Learner(cfg, spec, num_envs=8, device=torch.device("cpu"))
    for step in range(2):
        single.update(batch, env_steps=step)

    sharded = sharded_weights(cfg, batch)
    for k, v in single.model.state_dict().items():
        torch.testing.assert_close(torch.from_numpy(sharded[k]), v, rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(v, Learner(cfg, spec, 8, torch.device("cpu")).model.state_dict()[k])
               for k, v in single.model.state_dict().items()), "the update changed nothing"


@pytest.mark.integration
def test_ray_run_with_two_learner_replicas(compose, tmp_path):
    from rlzoo.runtime.checkpoint import latest_path, load_checkpoint
    from rlzoo.runtime.trainer import train

    cfg = compose(["runtime=ray", "runtime.num_actors=1", "runtime.learners=2", "runtime.batch_size=8",
                   "runtime.envs_per_actor=4", "total_steps=512", "runtime.allow_oversubscribe=true"])
    summary = train(cfg, tmp_path)
    assert summary["learner_steps"] == 512 // (8 * 16)
    assert load_checkpoint(latest_path(tmp_path))["learner"]["version"] == summary["learner_steps"]


@pytest.mark.unit
def test_chunked_update_equals_one_pass(compose):
    """Gradients accumulated over column chunks (runtime.learner_chunk) equal one pass over the batch."""
    cfg = compose(["runtime.envs_per_actor=4", "runtime.batch_size=4", "algo.lr_decay=none",
                   "runtime.precision=fp32", "bonus=e3b"])
    spec = env_spec(cfg.env)
    batch = RolloutWorker(cfg, 0, spec).rollout().unroll
    params, metrics = [], []
    for chunk in (0, 1, 3):  # one pass; one column at a time; uneven chunks (3 + 1)
        cfg.runtime.learner_chunk = chunk
        learner = Learner(cfg, spec, num_envs=4, device=torch.device("cpu"))
        metrics.append(learner.update(batch, env_steps=0))
        params.append(learner.model.state_dict())
    for other, other_metrics in zip(params[1:], metrics[1:]):
        for k, v in params[0].items():
            torch.testing.assert_close(other[k], v, rtol=1e-5, atol=1e-6)
        assert other_metrics["loss/total"] == pytest.approx(metrics[0]["loss/total"], rel=1e-5)
    assert any(not torch.equal(v, Learner(cfg, spec, 4, torch.device("cpu")).model.state_dict()[k])
               for k, v in params[0].items()), "the update changed nothing"
