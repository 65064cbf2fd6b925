"""Models: output shapes, LSTM resets, gradients, blstats normalisation, config validation."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from nle import nethack
from omegaconf import OmegaConf

from rlzoo.bonuses.common.encoders import SymbolicTrunk
from rlzoo.envs.vec_env import EnvSpec
from rlzoo.models import build_model, build_torso
from rlzoo.models.impala_cnn import ResidualBlock
from rlzoo.models.nethack_net import NUM_GLYPHS, BlstatsNormalizer

pytestmark = pytest.mark.unit

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "model"
NETHACK_SPEC = EnvSpec(
    family="minihack",
    name="MiniHack-Room-5x5-v0",
    obs_space={
        "glyphs": ((21, 79), np.dtype(np.int16)),
        "crop": ((9, 9), np.dtype(np.int16)),
        "blstats": ((27,), np.dtype(np.int32)),
        "message": ((256,), np.dtype(np.uint8)),
    },
    num_actions=8,
)
PROCGEN_SPEC = EnvSpec(
    family="procgen",
    name="coinrun",
    obs_space={"rgb": ((64, 64, 3), np.dtype(np.uint8))},
    num_actions=15,
)
MINIGRID_SPEC = EnvSpec(
    family="minigrid",
    name="MiniGrid-MultiRoom-N7-S4-v0",
    obs_space={"image": ((7, 7, 3), np.dtype(np.uint8)), "agent": ((3,), np.dtype(np.uint8))},
    num_actions=7,
)


def _cfg(config_file, **overrides):
    cfg = OmegaConf.to_container(OmegaConf.load(CONFIGS / f"{config_file}.yaml"))
    return {**cfg, **overrides}


def _random_obs(spec, *lead, seed=0):
    generator = torch.Generator().manual_seed(seed)
    obs = {}
    for key, (shape, dtype) in spec.obs_space.items():
        high = {"glyphs": NUM_GLYPHS, "crop": NUM_GLYPHS, "blstats": 100}.get(key, 256)
        torch_dtype = getattr(torch, np.dtype(dtype).name)
        obs[key] = torch.randint(0, high, (*lead, *shape), generator=generator).to(torch_dtype)
    return obs


CASES = [
    ("nethack", NETHACK_SPEC, 512),
    ("e3b", NETHACK_SPEC, 1024),
    ("crop", NETHACK_SPEC, 256),
    ("impala_cnn", PROCGEN_SPEC, 0),
    ("minigrid", MINIGRID_SPEC, 1024),
]


@pytest.mark.parametrize("config, spec, lstm_size", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("intrinsic", [False, True])
def test_output_shapes(config, spec, lstm_size, intrinsic):
    torch.manual_seed(0)
    model = build_model(OmegaConf.load(CONFIGS / f"{config}.yaml"), spec, intrinsic_value_head=intrinsic)
    T, B = 3, 2
    state = model.initial_state(B)
    assert len(state) == (2 if lstm_size else 0)
    assert all(s.shape == (B, lstm_size) for s in state)
    out, new_state = model(_random_obs(spec, T, B), torch.zeros(T, B, dtype=torch.bool), state)
    assert out["logits"].shape == (T, B, spec.num_actions)
    assert out["baseline"].shape == (T, B)
    assert ("int_baseline" in out) == intrinsic
    if intrinsic:
        assert out["int_baseline"].shape == (T, B)
    assert [s.shape for s in new_state] == [s.shape for s in state]


@pytest.mark.parametrize(
    "config, spec, out_dim", [("nethack", NETHACK_SPEC, 512), ("crop", NETHACK_SPEC, 256),
                              ("impala_cnn", PROCGEN_SPEC, 256), ("minigrid", MINIGRID_SPEC, 1024),
                              ("minigrid_embedding", MINIGRID_SPEC, 128)]  # fmt: skip
)
def test_torso_output_dim(config, spec, out_dim):
    torso = build_torso(_cfg(config), spec)
    assert torso.out_dim == out_dim
    assert torso(_random_obs(spec, 5)).shape == (5, out_dim)


def _naive_unroll(model, obs, first, state):
    """Reference: one LSTM step at a time, zeroing the state where `first` is set."""
    T, B = first.shape
    h, c = state
    logits = []
    for t in range(T):
        keep = (~first[t]).float().unsqueeze(-1)
        h, c = h * keep, c * keep
        step_obs = {k: v[t : t + 1] for k, v in obs.items()}
        out, (h, c) = model(step_obs, torch.zeros(1, B, dtype=torch.bool), (h, c))
        logits.append(out["logits"][0])
    return torch.stack(logits), (h, c)


def _lstm_case(T, B, resets):
    """A small recurrent model, random observations [T, B], `first` set at the (t, b) in `resets` and a
    random incoming state."""
    torch.manual_seed(0)
    model = build_model(_cfg("crop", lstm_size=16, fc_sizes=[16]), NETHACK_SPEC)
    first = torch.zeros(T, B, dtype=torch.bool)
    for t, b in resets:
        first[t, b] = True
    return model, _random_obs(NETHACK_SPEC, T, B), first, tuple(torch.randn(B, 16) for _ in range(2))


def test_lstm_resets_state_at_first():
    model, obs, first, state = _lstm_case(6, 3, [(2, 0), (4, 1), (4, 2), (5, 0)])
    with torch.no_grad():
        out, (h, c) = model(obs, first, state)
        expected, (h_ref, c_ref) = _naive_unroll(model, obs, first, state)
        torch.testing.assert_close(out["logits"], expected)
        torch.testing.assert_close(h, h_ref)
        torch.testing.assert_close(c, c_ref)
        # From a reset on, env 1 behaves as if started from the zero state.
        fresh, _ = model({k: v[4:, 1:2] for k, v in obs.items()}, first[4:, 1:2], model.initial_state(1))
        torch.testing.assert_close(out["logits"][4:, 1:2], fresh["logits"])
        # Without a reset the incoming state matters.
        env_1 = {k: v[:2, 1:2] for k, v in obs.items()}
        carried, _ = model(env_1, first[:2, 1:2], model.initial_state(1))
        assert not torch.allclose(out["logits"][:2, 1:2], carried["logits"])


def test_lstm_gradients_match_the_step_by_step_unroll():
    # Chunks of 1, 1, 1, 3 and 1 steps between the resets.
    model, obs, first, state = _lstm_case(7, 3, [(1, 2), (2, 0), (3, 1), (6, 0)])
    weights = torch.randn(7, 3, model.num_actions)

    def gradients(unroll):
        model.zero_grad()
        logits, (h, c) = unroll()
        ((logits * weights).sum() + h.sum() + c.pow(2).sum()).backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    fused = gradients(lambda: (lambda out, s: (out["logits"], s))(*model(obs, first, state)))
    naive = gradients(lambda: _naive_unroll(model, obs, first, state))
    assert fused.keys() == naive.keys() and "lstm.weight_hh_l0" in fused
    for name in fused:
        torch.testing.assert_close(fused[name], naive[name], msg=name)


@pytest.mark.parametrize("config, spec", [("nethack", NETHACK_SPEC), ("impala_cnn", PROCGEN_SPEC),
                                          ("minigrid", MINIGRID_SPEC)])
def test_gradient_step_reaches_every_parameter(config, spec):
    torch.manual_seed(0)
    overrides = {"use_message": True} if spec is NETHACK_SPEC else {"lstm_size": 32}
    model = build_model(_cfg(config, **overrides), spec, intrinsic_value_head=True)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    T, B = 2, 2
    out, _ = model(_random_obs(spec, T, B), torch.zeros(T, B, dtype=torch.bool), model.initial_state(B))
    loss = out["logits"].logsumexp(-1).sum() + out["baseline"].pow(2).sum() + out["int_baseline"].sum()
    loss.backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    unchanged = [name for name, p in model.named_parameters() if torch.equal(p, before[name])]
    assert unchanged == []


def test_blstats_normalisation_matches_hand_computed_values():
    raw = torch.zeros(1, 27, dtype=torch.int32)
    raw[0, nethack.NLE_BL_X] = 79
    raw[0, nethack.NLE_BL_Y] = 7
    raw[0, nethack.NLE_BL_HP] = 5
    raw[0, nethack.NLE_BL_HPMAX] = 20
    raw[0, nethack.NLE_BL_SCORE] = 100
    raw[0, nethack.NLE_BL_AC] = -4
    raw[0, nethack.NLE_BL_CONDITION] = nethack.BL_MASK_BLIND | nethack.BL_MASK_CONF
    norm = BlstatsNormalizer()
    x = norm(raw)[0]
    assert norm.out_dim == 26 + 13 == x.shape[0]
    assert x[nethack.NLE_BL_X] == pytest.approx(1.0)
    assert x[nethack.NLE_BL_Y] == pytest.approx(7 / 21)
    assert x[nethack.NLE_BL_HP] == pytest.approx(0.25)
    assert x[nethack.NLE_BL_HPMAX] == pytest.approx(math.log(21))
    assert x[nethack.NLE_BL_SCORE] == pytest.approx(math.log(101))
    assert x[nethack.NLE_BL_AC] == pytest.approx(-0.4)
    # The 13 condition bits come last, in sorted BL_MASK_* name order: BLIND is 0th, CONF 1st.
    assert x[26:].tolist() == [1.0, 1.0] + [0.0] * 11
    # Zero max HP (before the game starts) must not divide by zero.
    assert torch.isfinite(norm(torch.zeros(1, 27, dtype=torch.int32))).all()


def test_impala_cnn_reads_uint8_frames_scaled_to_unit_range():
    torso = build_torso(_cfg("impala_cnn"), PROCGEN_SPEC)
    assert torso.fc.in_features == 32 * 8 * 8  # three stride-2 pools: 64 -> 32 -> 16 -> 8
    obs = _random_obs(PROCGEN_SPEC, 2)
    pixels = obs["rgb"].permute(0, 3, 1, 2).float() / 255.0
    expected = torch.relu(torso.fc(torch.relu(torso.stages(pixels)).flatten(1)))
    torch.testing.assert_close(torso(obs), expected)


@pytest.mark.parametrize(
    "config, spec, pattern",
    [
        ("impala_cnn", NETHACK_SPEC, r"model\.name='impala_cnn' cannot read minihack.*nethack_cnn"),
        ("nethack", PROCGEN_SPEC, r"model\.name='nethack_cnn' cannot read procgen.*impala_cnn"),
        ("minigrid", NETHACK_SPEC, r"model\.name='minigrid_cnn' cannot read minihack"),
        ("nethack", MINIGRID_SPEC, r"model\.name='nethack_cnn' cannot read minigrid.*minigrid_cnn"),
    ],
)
def test_model_that_does_not_fit_the_env_is_rejected(config, spec, pattern):
    with pytest.raises(ValueError, match=pattern):
        build_model(_cfg(config), spec)


@pytest.mark.parametrize(
    "overrides, pattern",
    [
        ({"name": "nethak_cnn"}, r"model\.name='nethak_cnn'.*nethack_cnn"),
        ({"lstm_size": -1}, r"model\.lstm_size"),
        ({"crop_channels": []}, r"model\.crop_channels"),
        ({"use_full_map": "yes"}, r"model\.use_full_map"),
        ({"hidden": 3}, r"unknown keys \['hidden'\]"),
    ],
)
def test_bad_model_values_are_rejected(overrides, pattern):
    with pytest.raises(ValueError, match=pattern):
        build_model(_cfg("nethack", **overrides), NETHACK_SPEC)


@pytest.mark.parametrize("overrides, pattern", [
    ({"input_scale": 0}, r"model\.input_scale=0 is not valid; expected a positive number"),
    ({"fc_sizes": [0]}, r"model\.fc_sizes"),
    ({"conv_channels": []}, r"model\.conv_channels"),
])
def test_bad_minigrid_model_values_are_rejected(overrides, pattern):
    with pytest.raises(ValueError, match=pattern):
        build_model(_cfg("minigrid", **overrides), MINIGRID_SPEC)


def _dim_order(t):
    """Dimensions from the largest stride to the smallest: (0, 1, 2, 3) is NCHW, (0, 2, 3, 1) channels-last."""
    return tuple(sorted(range(t.dim()), key=lambda d: -t.stride(d)))


def test_activation_before_flatten_gets_an_nchw_input_and_gradient():
    # Convolutions of the permuted embedding return channels-last tensors; an activation whose input
    # and gradient differ in layout runs its backward about ten times slower (models/layout.py).
    torso = build_torso(_cfg("nethack"), NETHACK_SPEC)
    rnd_trunk = SymbolicTrunk(NETHACK_SPEC, use_full_map=True)
    last_activations = [torso.crop_cnn[-1], torso.map_cnn[-1], rnd_trunk.crop_conv[-2], rnd_trunk.map_conv[-2]]
    seen = []
    for module in last_activations:
        module.register_forward_hook(lambda _m, inputs, _out: seen.append(_dim_order(inputs[0])))
        module.register_full_backward_hook(lambda _m, _g_in, g_out: seen.append(_dim_order(g_out[0])))
    obs = _random_obs(NETHACK_SPEC, 4)
    (torso(obs).sum() + rnd_trunk(obs, torch.zeros(4, 27)).sum()).backward()
    assert seen == [(0, 1, 2, 3)] * 8


@pytest.mark.unit
@pytest.mark.parametrize("autocast_dtype", [None, torch.bfloat16])
def test_impala_residual_block_in_place_matches_its_formula(autocast_dtype):
    """The block computes x + conv1(relu(conv0(relu(x)))) in place; the input and gradients must not change."""
    torch.manual_seed(0)
    block = ResidualBlock(4)
    x = torch.randn(2, 4, 6, 6).contiguous(memory_format=torch.channels_last).requires_grad_()
    x_copy = x.detach().clone()
    grads = []
    for formula in (block, lambda v: v + block.conv1(torch.relu(block.conv0(torch.relu(v))))):
        block.zero_grad()
        x.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast_dtype is not None):
            out = formula(x)
        (out.float() * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append((out.detach(), x.grad.clone(), [p.grad.clone() for p in block.parameters()]))
    assert torch.equal(x.detach(), x_copy)
    (out_a, gx_a, gp_a), (out_b, gx_b, gp_b) = grads
    assert torch.equal(out_a, out_b) and torch.equal(gx_a, gx_b)
    assert all(torch.equal(a, b) for a, b in zip(gp_a, gp_b))


def test_minigrid_torso_is_three_stride_two_convs_on_the_scaled_view():
    """7 -> 4 -> 2 -> 1 with 3x3 stride-2 'same' convolutions; the embedding reads the view / 255."""
    torso = build_torso(_cfg("minigrid_embedding"), MINIGRID_SPEC)
    convs = [m for m in torso.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs] == [
        (32, (3, 3), (2, 2), (1, 1)), (32, (3, 3), (2, 2), (1, 1)), (128, (3, 3), (2, 2), (1, 1))]
    obs = _random_obs(MINIGRID_SPEC, 4)
    by_hand = obs["image"].permute(0, 3, 1, 2).float() / 255
    for layer in torso.convs:
        by_hand = layer(by_hand)
    torch.testing.assert_close(torso(obs), by_hand.flatten(1))
    # The policy network reads the integers unscaled: the same weights on 255x the input.
    unscaled = build_torso(_cfg("minigrid_embedding", input_scale=1.0), MINIGRID_SPEC)
    unscaled.load_state_dict(torso.state_dict())
    assert not torch.allclose(unscaled(obs), torso(obs))


def test_minigrid_torso_weights_are_orthogonal_with_zero_bias():
    torso = build_torso(_cfg("minigrid"), MINIGRID_SPEC)
    first_fc = torso.fc[0]
    gram = first_fc.weight.T @ first_fc.weight  # [32, 32]: orthonormal columns times the ReLU gain²
    torch.testing.assert_close(gram, 2.0 * torch.eye(32), atol=1e-4, rtol=0)
    assert all(not m.bias.detach().any() for m in torso.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)))
