"""runtime.precision: bf16 inference on actors and bf16 autocast in the learner keep float32 where it matters."""
import copy

import numpy as np
import pytest
import torch

from rlzoo.bonuses import build_bonus
from rlzoo.config import ConfigError
from rlzoo.envs import env_spec, make_vec_env
from rlzoo.models import build_model
from rlzoo.models import precision
from rlzoo.runtime.checkpoint import latest_path, load_checkpoint
from rlzoo.runtime.learner import Learner
from rlzoo.runtime.rollout import RolloutWorker
from rlzoo.unroll import Unroll
from rlzoo.runtime.trainer import train

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("native", [True, False])
def test_resolve_precision(monkeypatch, native):
    monkeypatch.setattr(precision, "native_bf16", lambda device: native)
    cpu = torch.device("cpu")
    assert precision.resolve_precision("fp32", cpu) == torch.float32
    assert precision.resolve_precision("bf16", cpu) == torch.bfloat16
    assert precision.resolve_precision("auto", cpu) == (torch.bfloat16 if native else torch.float32)
    with pytest.raises(ValueError, match="runtime.precision"):
        precision.resolve_precision("fp16", cpu)


def test_bad_precision_names_the_key(compose, tmp_path):
    with pytest.raises(ConfigError, match="runtime.precision"):
        train(compose(["runtime.precision=fp16"]), tmp_path)


def test_bf16_acting_matches_fp32_policy(compose):
    cfg = compose([])
    spec = env_spec(cfg.env)
    torch.manual_seed(0)
    model = build_model(cfg.model, spec).eval()
    low = copy.deepcopy(model).to(torch.bfloat16)
    env = make_vec_env(cfg.env, 8, seed=0)
    obs = {k: v.copy() for k, v in env.reset().items()}
    env.close()
    first = np.ones(8, dtype=bool)
    _, logits, (h, _) = model.act(obs, first, model.initial_state(8))
    _, low_logits, (low_h, _) = low.act(obs, first, low.initial_state(8))
    assert low_logits.dtype == torch.float32 and low_h.dtype == torch.bfloat16
    torch.testing.assert_close(low_logits, logits, atol=0.05, rtol=0.05)
    assert not torch.equal(low_logits, logits)  # it did compute in bf16


def test_bf16_learner_keeps_float32_weights_and_tracks_fp32_loss(compose):
    losses = {}
    for name in ("fp32", "bf16"):
        cfg = compose([f"runtime.precision={name}", "algo.lr_decay=none"])
        spec = env_spec(cfg.env)
        worker = RolloutWorker(cfg, 0, spec)
        assert next(worker.model.parameters()).dtype == (torch.bfloat16 if name == "bf16" else torch.float32)
        batch = Unroll.concat([worker.rollout().unroll])
        assert batch.core_state[0].dtype == np.float32
        learner = Learner(cfg, spec, cfg.runtime.envs_per_actor, torch.device("cpu"))  # same seed, same weights
        metrics = learner.update(batch, 0)
        assert all(p.dtype == torch.float32 for p in learner.model.parameters())
        losses[name] = metrics["loss/baseline"]
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.1)


def test_e3b_in_bf16_keeps_its_inverse_covariance_in_float64(compose):
    cfg = compose(["bonus=e3b", "runtime.precision=bf16"])
    spec = env_spec(cfg.env)
    batch = RolloutWorker(cfg, 0, spec).rollout().unroll
    torch.manual_seed(0)
    full = build_bonus(cfg.bonus, spec, cfg.model, 4, "cpu")
    torch.manual_seed(0)
    low = build_bonus(cfg.bonus, spec, cfg.model, 4, "cpu", torch.bfloat16)
    as_torch = batch.to_torch("cpu")
    reward, low_reward = full.intrinsic_reward(as_torch), low.intrinsic_reward(as_torch)
    assert low.cov_inverse.dtype == torch.float64
    assert low.compute_dtype == torch.bfloat16
    torch.testing.assert_close(low_reward, reward, atol=0.05, rtol=0.05)


def test_serial_training_in_bf16_reports_its_precision(compose, tmp_path):
    summary = train(compose(["runtime.precision=bf16", "total_steps=256"]), tmp_path)
    assert summary["precision"] == "bf16" and summary["learner_steps"] == 4
    weights = load_checkpoint(latest_path(tmp_path))["learner"]["model"]
    assert all(v.dtype == torch.float32 for v in weights.values())
