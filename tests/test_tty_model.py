"""The terminal model (model=tty): crop, output shapes, a valid torso and policy, config validation."""
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from rlzoo.envs import env_spec, make_vec_env
from rlzoo.envs.vec_env import EnvSpec
from rlzoo.models import build_model, build_torso
from rlzoo.models.tty_net import TtyTorso, crop_around

pytestmark = pytest.mark.unit

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "model"
TTY_SPACE = {
    "tty_chars": ((24, 80), np.dtype(np.uint8)),
    "tty_colors": ((24, 80), np.dtype(np.int8)),
    "tty_cursor": ((2,), np.dtype(np.uint8)),
}
TTY_SPEC = EnvSpec(family="nethack", name="NetHackScore-v0", obs_space=TTY_SPACE, num_actions=23)
SYMBOLIC_SPEC = EnvSpec(
    family="minihack",
    name="MiniHack-Room-5x5-v0",
    obs_space={"glyphs": ((21, 79), np.dtype(np.int16)), "crop": ((9, 9), np.dtype(np.int16)),
               "blstats": ((27,), np.dtype(np.int32)), "message": ((256,), np.dtype(np.uint8))},
    num_actions=8,
)  # fmt: skip


def _cfg(**overrides):
    return {**OmegaConf.to_container(OmegaConf.load(CONFIGS / "tty.yaml")), **overrides}


def _random_tty(*lead, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "tty_chars": torch.randint(32, 127, (*lead, 24, 80), generator=g).to(torch.uint8),
        "tty_colors": torch.randint(0, 32, (*lead, 24, 80), generator=g).to(torch.int8),
        "tty_cursor": torch.stack([torch.randint(0, 24, lead, generator=g),
                                   torch.randint(0, 80, lead, generator=g)], dim=-1).to(torch.uint8),
    }  # fmt: skip


def test_crop_around_the_cursor_by_hand():
    grid = (torch.arange(4 * 5).view(1, 1, 4, 5) + 1).expand(2, 1, 4, 5)  # cell (r, c) holds 5r + c + 1
    centre = torch.tensor([[0, 0], [3, 4]])
    crop = crop_around(grid, centre, 3)
    assert crop.shape == (2, 1, 3, 3)
    # Top-left corner: the row above and the column to the left are off the screen (0).
    assert crop[0, 0].tolist() == [[0, 0, 0], [0, 1, 2], [0, 6, 7]]
    # Bottom-right corner (cell 20): the row below and the column to the right are off the screen.
    assert crop[1, 0].tolist() == [[14, 15, 0], [19, 20, 0], [0, 0, 0]]


def test_torso_from_the_config_and_its_output():
    torso = build_torso(_cfg(), TTY_SPEC)
    assert isinstance(torso, TtyTorso)
    assert torso.input_keys == ("tty_chars", "tty_colors", "tty_cursor")
    assert torso.out_dim == 512
    assert torso(_random_tty(5)).shape == (5, 512)


def test_policy_output_shapes_and_every_parameter_learns():
    torch.manual_seed(0)
    model = build_model(_cfg(lstm_size=32, fc_sizes=[64]), TTY_SPEC)
    T, B = 3, 2
    out, state = model(_random_tty(T, B), torch.zeros(T, B, dtype=torch.bool), model.initial_state(B))
    assert out["logits"].shape == (T, B, 23) and out["baseline"].shape == (T, B)
    assert [s.shape for s in state] == [(B, 32), (B, 32)]
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    (out["logits"].logsumexp(-1).sum() + out["baseline"].pow(2).sum()).backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert [name for name, p in model.named_parameters() if torch.equal(p, before[name])] == []


def test_each_part_of_the_screen_reaches_the_features():
    torch.manual_seed(0)
    torso = build_torso(_cfg(), TTY_SPEC).eval()
    obs = _random_tty(1)
    obs["tty_cursor"][:] = torch.tensor([10, 40], dtype=torch.uint8)
    base = torso(obs)
    for row, col in ((0, 5), (23, 70), (11, 41), (4, 2)):  # message, status, beside the cursor, map
        changed = {k: v.clone() for k, v in obs.items()}
        changed["tty_chars"][0, row, col] = ord("@") if obs["tty_chars"][0, row, col] != ord("@") else ord("x")
        assert not torch.allclose(torso(changed), base), (row, col)


def test_acts_on_the_env_observations():
    cfg = {"name": "MiniHack-Room-5x5-v0", "observation": "tty"}
    spec = env_spec(cfg)
    model = build_model(_cfg(), spec)
    venv = make_vec_env(cfg, num_envs=2, seed=0)
    try:
        obs = venv.reset()
        actions, logits, _ = model.act(obs, np.ones(2, dtype=bool), model.initial_state(2))
        assert actions.shape == (2,) and logits.shape == (2, spec.num_actions)
    finally:
        venv.close()


@pytest.mark.parametrize(
    "model_cfg, spec, pattern",
    [
        (_cfg(), SYMBOLIC_SPEC, r"model\.name='tty_cnn' reads \['tty_chars'.*set env\.observation=tty or both"),
        (OmegaConf.to_container(OmegaConf.load(CONFIGS / "nethack.yaml")), TTY_SPEC,
         r"model\.name='nethack_cnn' reads \['crop', 'blstats'\].*env\.observation=symbolic or both"),
        (_cfg(crop_size=8), TTY_SPEC, r"model\.crop_size=8 .*odd"),
        (_cfg(screen_channels=[]), TTY_SPEC, r"model\.screen_channels"),
        (_cfg(glyph_embedding_dim=3), TTY_SPEC, r"unknown keys \['glyph_embedding_dim'\]"),
    ],
)  # fmt: skip
def test_bad_tty_model_configs_are_rejected(model_cfg, spec, pattern):
    with pytest.raises(ValueError, match=pattern):
        build_model(model_cfg, spec)
