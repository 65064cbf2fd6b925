"""Sample Factory's return normalisation: the running statistics on hand values, the transforms, and
APPO's per-batch targets (GAE in reward units, value targets normalised after the update)."""

import numpy as np
import pytest
import torch

from rlzoo.algos.appo import gae_targets
from rlzoo.algos.objective import Chunk, build_objective
from rlzoo.algos.return_normalization import CLIP, EPS, Moments, ReturnNormalizer, merge_moments
from rlzoo.algos.rewards import RewardMix, reward_streams
from rlzoo.config import ConfigError, validate
from rlzoo.unroll import synthetic_unroll

pytestmark = pytest.mark.unit
CPU = torch.device("cpu")


def test_first_batch_merges_with_the_unit_prior_as_sample_factory_does():
    # Prior: mean 0, var 1, count 1. Batch 1, 2, 3, 4: mean 2.5, unbiased var 5/3, count 4.
    # δ = 2.5; mean = 0 + 2.5·4/5 = 2; M2 = 1·1 + (5/3)·4 + 2.5²·1·4/5 = 1 + 20/3 + 5; var = M2 / 5.
    merged = merge_moments(Moments(0.0, 1.0, 1.0), 2.5, 5 / 3, 4)
    assert merged.mean == pytest.approx(2.0)
    assert merged.var == pytest.approx((1 + 20 / 3 + 5) / 5)
    assert merged.count == 5
    normalizer = ReturnNormalizer()
    normalizer.update(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    assert normalizer.moments == pytest.approx(merged)


def test_normalise_and_denormalise_clip_at_five_standard_deviations():
    normalizer = ReturnNormalizer()
    normalizer.moments = Moments(mean=1.0, var=4.0 - EPS, count=10.0)  # std exactly 2
    x = torch.tensor([1.0, 5.0, 100.0, -100.0])
    torch.testing.assert_close(normalizer.normalize(x), torch.tensor([0.0, 2.0, CLIP, -CLIP]))
    y = torch.tensor([0.0, 2.0, 7.0, -7.0])
    torch.testing.assert_close(normalizer.denormalize(y), torch.tensor([1.0, 5.0, 11.0, -9.0]))
    restored = ReturnNormalizer()
    restored.load_state_dict(normalizer.state_dict())
    assert restored.moments == normalizer.moments


def test_appo_targets_run_gae_in_reward_units_and_normalise_returns_after_the_update(compose):
    cfg = compose(["algo=appo", "algo.gae_lambda=0.9", "algo.clip_value=0", "algo.normalize_advantages=false"])
    objective = build_objective(cfg.algo, cfg.bonus)
    prior = Moments(mean=1.0, var=4.0 - EPS, count=50.0)
    objective.normalizers["baseline"].moments = prior
    batch = synthetic_unroll({"x": ((2,), np.float32)}, 5, 8, 3, value_heads=("baseline",)).to_torch(CPU)
    batch.rewards.mul_(30.0)  # some beyond the ±10 clip
    in_units = objective.in_reward_units(batch).values["baseline"]  # what the learner hands the extra terms

    targets = objective.prepare(batch, None)

    # By hand: values back to reward units with the prior (clip ±5, ×2, +1), GAE there, then the
    # statistics absorb the returns and the value targets are the returns in the new units.
    values = batch.values["baseline"].clamp(-5, 5) * 2.0 + 1.0
    torch.testing.assert_close(in_units, values)
    streams = reward_streams(batch.rewards, None, batch.dones, RewardMix(discount=cfg.algo.discount, clip=10.0))
    assert float(streams[0].rewards.abs().max()) == 10.0
    expected = gae_targets({"baseline": values}, streams, 0.9)
    torch.testing.assert_close(targets.advantages, expected.advantages)
    returns = expected.returns["baseline"].double()
    moments = merge_moments(prior, float(returns.mean()), float(returns.var()), returns.numel())
    assert objective.normalizers["baseline"].moments == pytest.approx(moments)
    normalised = ((returns - moments.mean) / (moments.var + EPS) ** 0.5).clamp(-5, 5).float()
    torch.testing.assert_close(targets.returns["baseline"], normalised)

    # The value loss compares the head's output with those normalised targets.
    cols = torch.arange(3)
    out = {"logits": torch.zeros(9, 3, 5), "baseline": torch.randn(9, 3)}
    chunk = Chunk(batch, targets, out, forward=None, share=1.0, env_steps=0, columns=cols)
    _, metrics = objective.loss(chunk, None)
    expected_loss = float((out["baseline"][:-1] - normalised).square().mean())
    assert metrics["loss/baseline"] == pytest.approx(expected_loss, rel=1e-5)
    assert expected_loss != pytest.approx(float((out["baseline"][:-1] - returns.float()).square().mean()), rel=1e-2)


def test_without_normalisation_the_targets_are_plain_gae(compose):
    cfg = compose(["algo=appo", "algo.normalize_returns=false"])
    objective = build_objective(cfg.algo, cfg.bonus)
    batch = synthetic_unroll({"x": ((2,), np.float32)}, 5, 8, 3, value_heads=("baseline",)).to_torch(CPU)
    targets = objective.prepare(batch, None)
    streams = reward_streams(batch.rewards, None, batch.dones, RewardMix.from_config(cfg.algo, cfg.bonus))
    torch.testing.assert_close(targets.returns["baseline"],
                               gae_targets(batch.values, streams, cfg.algo.gae_lambda).returns["baseline"])
    assert objective.in_reward_units(batch) is batch and objective.normalizers == {}


@pytest.mark.parametrize("overrides, match", [
    (["algo=appo", "algo.advantages=vtrace"], "algo.normalize_returns=true needs algo.advantages=gae"),
    (["algo=appo", "algo.normalize_returns=maybe"], "algo.normalize_returns"),
    (["algo.reward_clip=-1"], r"algo.reward_clip=-1 .*'abs_one', 'none'.* positive number"),
    (["algo.reward_clip=abs_two"], "algo.reward_clip='abs_two'"),
])
def test_bad_settings_name_the_key(compose, overrides, match):
    with pytest.raises(ConfigError, match=match):
        validate(compose(overrides))


class _Recorder:
    """An extra loss term that only records the behaviour values it is handed."""

    name = "recorder"

    def __init__(self):
        self.values = None

    def start_update(self, batch, intrinsic, env_steps):
        self.values = batch.values["baseline"].clone()
        return {}

    def __call__(self, chunk):
        return torch.zeros(()), {}

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def _learner(compose, normalize):
    from rlzoo.envs import env_spec
    from rlzoo.runtime.learner import Learner

    cfg = compose(["algo=appo", f"algo.normalize_returns={normalize}", "runtime.envs_per_actor=2",
                   "runtime.batch_size=2", "runtime.unroll_length=4", "algo.epochs=2", "algo.minibatches=2",
                   "runtime.precision=fp32"])
    spec = env_spec(cfg.env)
    batch = synthetic_unroll(spec.obs_space, spec.num_actions, 4, 2, int(cfg.model.lstm_size),
                             value_heads=("baseline",))
    return Learner(cfg, spec, 2, CPU), batch


def test_the_learner_updates_once_per_batch_hands_terms_reward_units_and_checkpoints_the_statistics(compose):
    learner, batch = _learner(compose, "true")
    learner.objective.normalizers["baseline"].moments = Moments(mean=1.0, var=4.0 - EPS, count=50.0)
    recorder = _Recorder()
    learner.terms.append(recorder)
    values = learner._bootstrap_from_learner(batch.to_torch()).values["baseline"]  # V(obs[T]): the learner's
    assert torch.equal(values[:-1], torch.from_numpy(batch.values["baseline"][:-1]))
    learner.update(batch, 0)
    # The terms (UCB-DrAC's credit) see the values in reward units with the statistics GAE used.
    torch.testing.assert_close(recorder.values, values.clamp(-5, 5) * 2.0 + 1.0)
    state = learner.state_dict()
    assert state["objective"]["return_normalizers"]["baseline"]["count"] == 50 + 4 * 2  # once, not per epoch
    learner.terms.remove(recorder)

    resumed, _ = _learner(compose, "true")
    resumed.load_state_dict(state)
    assert resumed.objective.normalizers["baseline"].moments == learner.objective.normalizers["baseline"].moments
    # Value heads trained in one unit cannot resume in the other.
    plain, _ = _learner(compose, "false")
    with pytest.raises(ValueError, match="trained with algo.normalize_returns=true"):
        plain.load_state_dict(state)
    with pytest.raises(ValueError, match="trained with algo.normalize_returns=false"):
        resumed.load_state_dict(plain.state_dict())
