"""experiment=motif_score / oni_score compose and train: the reference env setups with their bonuses."""
import numpy as np
import pytest
import torch

from rlzoo.envs import env_spec
from rlzoo.logging.metrics import read_metrics
from rlzoo.motif.reward_model import QUANTILE_LEVELS, MessageRewardModel, save_reward_model
from rlzoo.runtime.trainer import train

pytestmark = pytest.mark.integration

SMALL_MODEL = ["model.use_full_map=false", "model.fc_sizes=[64,64]", "model.lstm_size=0", "model.crop_channels=[8,8]"]


def test_oni_score_trains_with_the_extended_actions_and_ranking(compose, tmp_path):
    cfg = compose(["experiment=oni_score", "bonus.annotator=score_gain", "bonus.model=ranking",
                   "bonus.steps_per_label_batch=2", "total_steps=512", f"output_root={tmp_path}", *SMALL_MODEL])
    assert env_spec(cfg.env).num_actions == 28 and cfg.bonus.coef == 0.4 and not cfg.bonus.clip_total
    summary = train(cfg, tmp_path / "run")
    assert summary["env_steps"] >= 512
    last = [m for m in read_metrics(tmp_path / "run") if "bonus/oni_stored" in m][-1]
    assert last["bonus/oni_stored"] > 0 and last["bonus/oni_labelled"] > 0


def test_motif_score_trains_with_the_eat_fix(compose, tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "rm.pt"
    save_reward_model(path, MessageRewardModel(embed_dim=8, channels=16, hidden=16), mean=0.0, std=1.0,
                      quantile_values=np.linspace(-1, 1, len(QUANTILE_LEVELS)), info={})
    cfg = compose(["experiment=motif_score", f"bonus.reward_model_path={path}", "total_steps=512",
                   f"output_root={tmp_path}", *SMALL_MODEL])
    assert cfg.env.prompt_fixes == "motif" and cfg.bonus.extrinsic_scale == 0.1 and cfg.algo.lr_decay == "none"
    summary = train(cfg, tmp_path / "run")
    assert summary["env_steps"] >= 512
    assert any("bonus/int_raw_mean" in m for m in read_metrics(tmp_path / "run"))
