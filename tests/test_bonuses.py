"""Exploration bonuses: formulas against hand-computed values, episodic state, ordering, checkpoints."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from rlzoo.bonuses import bonus_names, build_bonus
from rlzoo.bonuses.common.base import BatchContext, batch_waves
from rlzoo.bonuses.common.counting import EpisodicCounts, GlobalCounts, state_hashes
from rlzoo.bonuses.e3b import elliptical_bonuses
from rlzoo.bonuses.common.normalization import IntrinsicNormalizer, RunningMeanStd
from rlzoo.config import load_config
from rlzoo.envs import env_spec
from rlzoo.unroll import Unroll

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("one_torch_thread")]

# A small φ network so the tests stay fast; the bonus code is the same for the full-size model.
SMALL_MODEL = [
    "model.use_full_map=false",
    "model.glyph_embedding_dim=8",
    "model.crop_channels=[8,8]",
    "model.blstats_hidden=[16]",
    "model.fc_sizes=[32]",
    "model.lstm_size=0",
]


@pytest.fixture(scope="module")
def minihack_spec():
    return env_spec(load_config(["env=minihack"]).env)


@pytest.fixture(scope="module")
def procgen_spec():
    return env_spec(load_config(["env=procgen"]).env)


def make_bonus(spec, bonus: str, num_envs: int, *overrides: str, env: str = "minihack"):
    small = SMALL_MODEL if env == "minihack" else []
    # Raw rewards by default, so the formulas can be checked by hand; tests of the normalisers override it.
    cfg = load_config([f"env={env}", f"bonus={bonus}", *small, "bonus.normalize=none", *overrides])
    torch.manual_seed(0)
    return build_bonus(cfg.bonus, spec, cfg.model, num_envs, "cpu")


def symbolic_obs(states: np.ndarray) -> dict[str, torch.Tensor]:
    """MiniHack-shaped observations [T+1, B] that are equal exactly when `states` are equal."""
    steps, cols = states.shape
    table = {s: np.random.default_rng(s).integers(0, 5976, size=(21, 79)) for s in np.unique(states).tolist()}
    glyphs = np.stack([table[s] for s in states.reshape(-1).tolist()]).reshape(steps, cols, 21, 79).astype(np.int16)
    blstats = np.zeros((steps, cols, 27), dtype=np.int32)
    blstats[..., 0] = states % 79
    blstats[..., 1] = states // 79
    return {
        "glyphs": torch.from_numpy(glyphs),
        "crop": torch.from_numpy(glyphs[..., :9, :9].copy()),
        "blstats": torch.from_numpy(blstats),
        "message": torch.zeros(steps, cols, 256, dtype=torch.uint8),
    }


def make_batch(states, dones, env_ids=None, unroll_index=0, first0=None, num_actions=8):
    """A batch [T, B] visiting `states` [T+1, B] with `dones` [T, B]."""
    states = np.asarray(states)
    dones = torch.as_tensor(np.asarray(dones, dtype=bool))
    cols = states.shape[1]
    first0 = torch.ones(1, cols, dtype=torch.bool) if first0 is None else torch.as_tensor(first0).view(1, cols)
    index = torch.as_tensor(unroll_index).expand(cols) if np.isscalar(unroll_index) else torch.as_tensor(unroll_index)
    steps = dones.shape[0]
    return Unroll(
        obs=symbolic_obs(states),
        first=torch.cat([first0, dones]),
        actions=torch.as_tensor(states[1:] % num_actions, dtype=torch.int64),
        rewards=torch.zeros(steps, cols),
        dones=dones,
        logits=torch.zeros(steps, cols, num_actions),
        core_state=(),
        env_ids=torch.arange(cols) if env_ids is None else torch.as_tensor(env_ids),
        unroll_index=index.clone(),
        policy_version=torch.zeros(cols, dtype=torch.int64),
        actor_ids=torch.zeros(cols, dtype=torch.int64),
    )


def run(bonus, batch):
    reward = bonus.intrinsic_reward(batch)
    return reward, bonus.update(batch)


# ---- E3B ---------------------------------------------------------------------------------------
def sherman_morrison_step(cov_inv: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """The paper's rank-1 step, one observation at a time: b = φᵀC⁻¹φ, then C⁻¹ ← (C + φφᵀ)⁻¹."""
    u = torch.bmm(cov_inv, phi.unsqueeze(-1)).squeeze(-1)
    bonus = (u * phi).sum(-1)
    cov_inv -= u.unsqueeze(-1) * (u / (1.0 + bonus).unsqueeze(-1)).unsqueeze(1)
    return bonus


def sequential_elliptical_bonuses(cov_inv, phi, dones, fresh, ridge):
    """Plain reference of `elliptical_bonuses`: a loop over steps with rank-1 updates."""
    initial = torch.eye(phi.shape[-1], dtype=phi.dtype) / ridge
    cov_inv[fresh] = initial
    registered = cov_inv.clone()
    sherman_morrison_step(registered, phi[0])
    cov_inv[fresh] = registered[fresh]  # obs[0] is a visit only where a new episode starts at it
    out = torch.empty(dones.shape, dtype=phi.dtype)
    for t in range(dones.shape[0]):
        cov_inv[dones[t]] = initial
        out[t] = sherman_morrison_step(cov_inv, phi[t + 1])
    return out


def test_elliptical_bonus_is_the_papers_equation_with_an_explicit_inverse():
    # The paper: b(s_t) = φ_tᵀ C_t⁻¹ φ_t with C_t = λI + Σ_{i<t} φ_iφ_iᵀ over the episode so far.
    torch.manual_seed(0)
    ridge, dim, cols, steps = 0.1, 6, 3, 9
    phi = torch.randn(steps + 1, cols, dim, dtype=torch.float64)
    cov_inv = torch.eye(dim, dtype=torch.float64).repeat(cols, 1, 1) / ridge
    out = elliptical_bonuses(cov_inv, phi, torch.zeros(steps, cols, dtype=torch.bool), torch.ones(cols, dtype=torch.bool),
                             ridge)
    for col in range(cols):
        cov = ridge * torch.eye(dim, dtype=torch.float64) + torch.outer(phi[0, col], phi[0, col])
        for t in range(steps):
            torch.testing.assert_close(out[t, col], phi[t + 1, col] @ torch.linalg.inv(cov) @ phi[t + 1, col])
            cov = cov + torch.outer(phi[t + 1, col], phi[t + 1, col])
        torch.testing.assert_close(cov_inv[col], torch.linalg.inv(cov))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 2e-4)])
def test_unroll_at_once_equals_rank1_steps(dtype, tol):
    torch.manual_seed(0)
    ridge, steps, cols, dim = 0.1, 12, 6, 5
    phi = torch.randn(steps + 1, cols, dim, dtype=dtype)
    dones = torch.rand(steps, cols) < 0.2
    dones[:, 0] = False  # one env runs through the whole unroll
    dones[[2, 3], 1] = True  # back-to-back episode ends
    dones[-1, 2] = True  # an episode ends on the last step
    fresh = torch.tensor([False, True, False, True, False, False])
    start = torch.linalg.inv(ridge * torch.eye(dim, dtype=dtype) + 0.5 * torch.einsum(
        "nbi,nbj->bij", *(2 * [torch.randn(3, cols, dim, dtype=dtype)])))  # mid-episode carried C⁻¹
    expected_cov, cov = start.clone(), start.clone()
    expected = sequential_elliptical_bonuses(expected_cov, phi, dones, fresh, ridge)
    out = elliptical_bonuses(cov, phi, dones, fresh, ridge)
    torch.testing.assert_close(out, expected, rtol=tol, atol=tol)
    torch.testing.assert_close(cov, expected_cov, rtol=tol, atol=tol * 10)


@pytest.mark.parametrize("scale", [1.0, 100.0, 1000.0])
def test_unroll_at_once_survives_large_near_repeated_embeddings(scale):
    """φ that grows large and repeats itself (a trained E3B encoder) must not break the factorisation."""
    torch.manual_seed(1)
    steps, cols, dim, ridge = 32, 4, 64, 0.1
    base = torch.randn(2, dim, dtype=torch.float64)
    phi = scale * (base[torch.randint(0, 2, (steps + 1, cols))] + 1e-4 * torch.randn(steps + 1, cols, dim, dtype=torch.float64))
    dones = torch.zeros(steps, cols, dtype=torch.bool)
    expected_cov = torch.eye(dim, dtype=torch.float64).repeat(cols, 1, 1) / ridge
    cov = expected_cov.clone()
    expected = sequential_elliptical_bonuses(expected_cov, phi, dones, torch.ones(cols, dtype=torch.bool), ridge)
    out = elliptical_bonuses(cov, phi, dones, torch.ones(cols, dtype=torch.bool), ridge)
    assert torch.isfinite(out).all() and (out >= 0).all()
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-6)


def test_repeated_embedding_bonus_decays_as_closed_form():
    ridge, steps = 0.1, 8
    phi = torch.tensor([0.6, -0.3, 1.2], dtype=torch.float64).expand(steps + 1, 1, 3).clone()
    sq = float(phi[0].square().sum())
    cov_inv = torch.eye(3, dtype=torch.float64).unsqueeze(0) / ridge
    out = elliptical_bonuses(cov_inv, phi, torch.zeros(steps, 1, dtype=torch.bool), torch.tensor([True]), ridge)
    # obs[0] is visit 1, so obs[t+1] is visit t+2: its bonus is computed after n = t+1 earlier visits.
    expected = torch.tensor([sq / (ridge + (t + 1) * sq) for t in range(steps)], dtype=torch.float64)
    torch.testing.assert_close(out[:, 0], expected, rtol=1e-9, atol=0)


def test_elliptical_bonuses_reset_at_done_and_register_first_state():
    ridge = 0.5
    phi = torch.tensor([1.0, 0.0], dtype=torch.float64).expand(4, 1, 2).clone()  # same φ every step
    dones = torch.tensor([[False], [True], [False]])
    cov_inv = torch.eye(2, dtype=torch.float64).unsqueeze(0) / ridge
    out = elliptical_bonuses(cov_inv, phi, dones, torch.tensor([True]), ridge)
    # obs[0] registered (n=1), obs[1] is visit 2; done → reset, obs[2] first of new episode; obs[3] visit 2.
    expected = [1 / (ridge + 1), 1 / ridge, 1 / (ridge + 1)]
    torch.testing.assert_close(out[:, 0], torch.tensor(expected, dtype=torch.float64))


def test_e3b_state_persists_across_unrolls_and_resets_on_done(minihack_spec):
    bonus = make_bonus(minihack_spec, "e3b", 2, "bonus.normalize=none")
    states = np.array([[0, 5], [1, 5], [2, 6], [0, 5], [3, 7]])
    dones = np.array([[False, False], [False, True], [True, False], [False, False]])
    # No update between the unrolls, so φ stays fixed and the reference below applies exactly.
    first = bonus.intrinsic_reward(make_batch(states[:3], dones[:2], unroll_index=0))
    second = bonus.intrinsic_reward(make_batch(states[2:], dones[2:], unroll_index=1, first0=dones[1]))
    rewards = torch.cat([first, second]).double()

    with torch.no_grad():
        phi = bonus.encoder({k: v.reshape(-1, *v.shape[2:]) for k, v in symbolic_obs(states).items()})
    phi = phi.view(5, 2, -1).double()
    eye = torch.eye(phi.shape[-1], dtype=torch.float64)
    expected = torch.zeros(4, 2, dtype=torch.float64)
    for col in range(2):
        cov = 0.1 * eye + torch.outer(phi[0, col], phi[0, col])  # the first state is registered
        for t in range(4):
            if dones[t, col]:
                cov = 0.1 * eye  # the reward of a done transition is 0; C restarts
            else:
                expected[t, col] = phi[t + 1, col] @ torch.linalg.solve(cov, phi[t + 1, col])
            cov = cov + torch.outer(phi[t + 1, col], phi[t + 1, col])
    torch.testing.assert_close(rewards, expected, rtol=1e-4, atol=1e-5)
    assert rewards[2, 0] == 0 and rewards[1, 1] == 0 and rewards[3, 0] > 0


def test_e3b_trains_only_inverse_dynamics(minihack_spec):
    bonus = make_bonus(minihack_spec, "e3b", 2)
    batch = make_batch(np.array([[0, 1], [2, 3], [4, 5]]), np.zeros((2, 2)))
    before = [p.detach().clone() for p in bonus.encoder.parameters()]
    _, metrics = run(bonus, batch)
    assert set(k for k in metrics if k.startswith("loss/")) == {"loss/e3b_inverse_dynamics"}
    assert any(not torch.equal(b, p) for b, p in zip(before, bonus.encoder.parameters()))


# ---- unroll order, waves, checkpoints ----------------------------------------------------------
def test_out_of_order_unroll_is_rejected(minihack_spec):
    bonus = make_bonus(minihack_spec, "counts", 2)
    states = np.zeros((3, 2), dtype=np.int64)
    run(bonus, make_batch(states, np.zeros((2, 2)), unroll_index=[4, 0]))  # fresh ids: any start index
    run(bonus, make_batch(states, np.zeros((2, 2)), unroll_index=[5, 1], first0=[False, False]))
    with pytest.raises(RuntimeError, match="env_id 0 arrived out of order"):
        bonus.intrinsic_reward(make_batch(states, np.zeros((2, 2)), unroll_index=[7, 2], first0=[False, False]))


def test_env_id_beyond_num_envs_is_rejected(minihack_spec):
    bonus = make_bonus(minihack_spec, "counts", 2)
    with pytest.raises(ValueError, match="env_ids must lie in"):
        bonus.intrinsic_reward(make_batch(np.zeros((2, 1), dtype=np.int64), [[False]], env_ids=[2]))


def test_waves_keep_repeated_env_columns_in_order():
    waves = batch_waves(np.array([3, 1, 3, 0, 3]))
    assert [w.tolist() for w in waves] == [[0, 1, 3], [2], [4]]


@pytest.mark.parametrize("name", ["e3b", "counts"])
def test_two_unrolls_of_one_env_in_one_batch_equal_two_batches(minihack_spec, name):
    states = np.array([[0], [1], [0], [2], [1]])
    dones = [[False], [False], [False], [False]]
    split = make_bonus(minihack_spec, name, 1, "bonus.normalize=none")
    a = split.intrinsic_reward(make_batch(states[:3], dones[:2]))
    b = split.intrinsic_reward(make_batch(states[2:], dones[2:], unroll_index=1, first0=[False]))
    joined = make_bonus(minihack_spec, name, 1, "bonus.normalize=none")
    both = make_batch(np.concatenate([states[:3], states[2:]], axis=1), np.concatenate([dones[:2], dones[2:]], axis=1),
                      env_ids=[0, 0], unroll_index=[0, 1], first0=[True, False])
    together = joined.intrinsic_reward(both)
    torch.testing.assert_close(together, torch.cat([a, b], dim=1))


def test_e3b_state_follows_env_ids_in_any_column_order(minihack_spec):
    # Envs 2, 3 of 4 in order (C⁻¹ updated in place) and swapped (updated through a copy).
    states = np.array([[0, 5], [1, 5], [2, 6], [0, 5], [3, 7]])
    dones = np.array([[False, False], [False, True], [True, False], [False, False]])
    rewards = {}
    for order in ([2, 3], [3, 2]):
        cols = [0, 1] if order == [2, 3] else [1, 0]
        bonus = make_bonus(minihack_spec, "e3b", 4, "bonus.normalize=none")
        first = bonus.intrinsic_reward(make_batch(states[:3, cols], dones[:2, cols], env_ids=order, unroll_index=0))
        second = bonus.intrinsic_reward(make_batch(states[2:, cols], dones[2:, cols], env_ids=order, unroll_index=1,
                                                   first0=dones[1, cols]))
        rewards[tuple(order)] = torch.cat([first, second])[:, cols]
        untouched = torch.eye(bonus.cov_inverse.shape[-1], dtype=torch.float64) / bonus.ridge
        torch.testing.assert_close(bonus.cov_inverse[:2], untouched.expand(2, -1, -1))
    torch.testing.assert_close(rewards[(2, 3)], rewards[(3, 2)])
    assert (rewards[(2, 3)] > 0).sum() >= 4


@pytest.mark.parametrize("name", ["e3b", "counts", "noveld", "ride", "rnd", "e3b_rnd"])
def test_checkpoint_round_trip_reproduces_next_reward(minihack_spec, name):
    states = np.array([[0, 1], [2, 1], [2, 3], [4, 3]])
    dones = np.array([[False, False], [False, True], [False, False]])
    original = make_bonus(minihack_spec, name, 2)
    run(original, make_batch(states, dones))
    restored = make_bonus(minihack_spec, name, 2)
    restored.load_state_dict(original.state_dict())
    nxt = make_batch(states[::-1].copy(), dones, unroll_index=1, first0=[False, False])
    torch.testing.assert_close(restored.intrinsic_reward(nxt), original.intrinsic_reward(nxt))


# ---- counts ------------------------------------------------------------------------------------
def test_global_counts_are_inverse_sqrt_of_visits(minihack_spec):
    bonus = make_bonus(minihack_spec, "counts_global", 2)
    states = np.array([[0, 1], [1, 1], [0, 2]])
    reward, _ = run(bonus, make_batch(states, np.zeros((2, 2))))
    # Visits in (t, env) order: 0, 1 (fresh envs' obs[0]); then 1 (2nd visit), 1 (3rd); then 0 (2nd), 2.
    expected = torch.tensor([[1 / math.sqrt(2), 1 / math.sqrt(3)], [1 / math.sqrt(2), 1.0]])
    torch.testing.assert_close(reward, expected)


def test_global_counts_rank_repeats_within_a_batch():
    counts = GlobalCounts()
    assert counts.visit(np.array([7, 8, 7, 7], dtype=np.uint64)).tolist() == [1, 1, 2, 3]
    assert counts.visit(np.array([8, 7], dtype=np.uint64)).tolist() == [2, 4]


def test_episodic_first_visit_and_reset(minihack_spec):
    bonus = make_bonus(minihack_spec, "counts", 1)
    states = np.array([[0], [1], [0], [1], [1], [2]])
    dones = [[False], [False], [True], [False], [False]]
    reward, _ = run(bonus, make_batch(states, dones))
    # 1 new; 0 seen; done → 0; 1 repeated in the new episode (its first state); 2 new.
    assert reward[:, 0].tolist() == [1.0, 0.0, 0.0, 0.0, 1.0]
    nxt = make_batch(np.array([[2], [0], [1]]), [[False], [False]], unroll_index=1, first0=[False])
    reward, _ = run(bonus, nxt)
    assert reward[:, 0].tolist() == [1.0, 0.0]  # the episode continues: 1 was already visited


def test_episodic_inverse_sqrt_counts(minihack_spec):
    bonus = make_bonus(minihack_spec, "counts", 1, "bonus.episodic_form=inverse_sqrt")
    reward, _ = run(bonus, make_batch(np.array([[0], [0], [1], [0]]), np.zeros((3, 1))))
    torch.testing.assert_close(reward[:, 0], torch.tensor([1 / math.sqrt(2), 1.0, 1 / math.sqrt(3)]))


def test_state_keys_select_fields():
    states = np.array([[0, 1]])
    obs = symbolic_obs(states)
    obs["glyphs"][0, 1] = obs["glyphs"][0, 0]
    full, glyphs, position = (state_hashes(obs, key) for key in ("full", "glyphs", "position"))
    assert glyphs[0, 0] == glyphs[0, 1] and position[0, 0] != position[0, 1] and full[0, 0] != full[0, 1]
    later = symbolic_obs(np.array([[0]]))
    later["blstats"][..., 20] = 42  # the turn counter alone does not make a new state
    assert state_hashes(later, "full")[0, 0] == full[0, 0]


def test_position_key_on_procgen_is_an_error(procgen_spec):
    with pytest.raises(ValueError, match="bonus.state_key='position' is not available for procgen"):
        make_bonus(procgen_spec, "counts", 1, "bonus.state_key=position", env="procgen")


def test_episodic_counts_table_per_env():
    counts = EpisodicCounts(2)
    ctx = BatchContext(torch.tensor([1, 0]), torch.zeros(2, 2, dtype=torch.bool), np.array([True, True]), [np.arange(2)])
    keys = np.array([[5, 5], [5, 6], [6, 6]], dtype=np.uint64)
    assert counts.visit(keys, ctx).tolist() == [[2, 1], [1, 2]]
    assert counts.tables[1] == {5: 2, 6: 1} and counts.tables[0] == {5: 1, 6: 2}


# ---- RND and NovelD ----------------------------------------------------------------------------
def test_rnd_error_falls_on_seen_input_and_target_gets_no_gradient(minihack_spec):
    bonus = make_bonus(minihack_spec, "rnd", 4, "bonus.normalize=none", "bonus.lr=1e-3")
    target = [p.detach().clone() for p in [*bonus.rnd.target_trunk.parameters(), *bonus.rnd.target_head.parameters()]]
    seen = np.array([[0, 0, 0, 0]] * 9)
    first = run(bonus, make_batch(seen, np.zeros((8, 4))))[0].mean()
    for i in range(1, 12):
        reward, _ = run(bonus, make_batch(seen, np.zeros((8, 4)), unroll_index=i, first0=[False] * 4))
    assert reward.mean() < 0.5 * first
    fresh = make_bonus(minihack_spec, "rnd", 4, "bonus.normalize=none")
    fresh.load_state_dict(bonus.state_dict())
    unseen = np.array([[0, 0, 0, 0]] + [[11, 12, 13, 14]] * 8)
    unseen_batch = make_batch(unseen, np.zeros((8, 4)), unroll_index=12, first0=[False] * 4)
    assert fresh.intrinsic_reward(unseen_batch).mean() > reward.mean()
    for before, p in zip(target, [*bonus.rnd.target_trunk.parameters(), *bonus.rnd.target_head.parameters()]):
        assert p.grad is None and not p.requires_grad and torch.equal(before, p)


def test_noveld_nonnegative_and_alpha_zero_is_rnd_error_times_first_visit(minihack_spec):
    rng = np.random.default_rng(1)
    states = rng.integers(0, 6, size=(13, 3))
    dones = rng.random((12, 3)) < 0.2
    bonus = make_bonus(minihack_spec, "noveld", 3, "bonus.alpha=0.0")
    batch = make_batch(states, dones)
    with torch.no_grad():
        error = bonus.rnd({k: v[1:].reshape(-1, *v.shape[2:]) for k, v in batch.obs.items()}).norm(dim=-1).view(12, 3)
    bonus = make_bonus(minihack_spec, "noveld", 3, "bonus.alpha=0.0")
    reward = bonus.intrinsic_reward(batch)
    ctx = BatchContext(torch.arange(3), batch.dones, np.ones(3, dtype=bool), [np.arange(3)])
    mask = EpisodicCounts(3).visit(state_hashes(batch.obs, "full"), ctx) == 1
    torch.testing.assert_close(reward, error * torch.as_tensor(mask) * (~batch.dones))
    assert (~torch.as_tensor(mask) & ~batch.dones).any()  # repeats inside episodes were masked
    unmasked = make_bonus(minihack_spec, "noveld", 3, "bonus.alpha=0.0", "bonus.first_visit_mask=false")
    torch.testing.assert_close(unmasked.intrinsic_reward(batch), error * (~batch.dones))


# ---- RIDE, combinations, normalisation, config errors ------------------------------------------
def test_ride_trains_forward_and_inverse_models(minihack_spec):
    bonus = make_bonus(minihack_spec, "ride", 2)
    batch = make_batch(np.array([[0, 1], [2, 3], [2, 4]]), np.zeros((2, 2)))
    with torch.no_grad():
        phi = bonus.encoder({k: v.reshape(-1, *v.shape[2:]) for k, v in batch.obs.items()}).view(3, 2, -1)
    reward, metrics = run(bonus, batch)
    assert {"loss/ride_forward_dynamics", "loss/ride_inverse_dynamics"} <= set(metrics)
    # Column 0 revisits state 2 (its count is 2); the key counts the whole observation.
    expected = (phi[1:] - phi[:-1]).norm(dim=-1) / torch.tensor([[1.0, 1.0], [2.0, 1.0]]).sqrt()
    torch.testing.assert_close(reward, expected)




@pytest.mark.parametrize("op", ["product", "sum"])
def test_global_episodic_combines_its_parts(minihack_spec, op):
    states = np.array([[0, 1], [1, 1], [0, 2], [3, 2]])
    dones = np.zeros((3, 2))
    combined = make_bonus(minihack_spec, "counts_global_episodic", 2, f"bonus.op={op}", "bonus.global_weight=2.0")
    reward, metrics = run(combined, make_batch(states, dones))
    g, _ = run(make_bonus(minihack_spec, "counts_global", 2), make_batch(states, dones))
    e, _ = run(make_bonus(minihack_spec, "counts", 2), make_batch(states, dones))
    torch.testing.assert_close(reward, g * e if op == "product" else 2.0 * g + e)
    assert "bonus/global_int_raw_mean" in metrics and "bonus/episodic_int_raw_mean" in metrics


def test_running_std_counts_every_element():
    stats = RunningMeanStd()
    x = torch.arange(24, dtype=torch.float64).view(4, 6)
    stats.update(x[:2])
    stats.update(x[2:])
    assert float(stats.count) == 24
    assert float(stats.std()) == pytest.approx(float(x.std(unbiased=False)), rel=1e-9)


def test_std_normalisation_divides_by_std_without_centering():
    norm = IntrinsicNormalizer("std", 2, 0.99, True)
    raw = torch.tensor([[1.0, 3.0], [5.0, 7.0]])
    out = norm(raw, torch.zeros(2, 2, dtype=torch.bool), torch.arange(2), [np.arange(2)])
    torch.testing.assert_close(out, raw / raw.std(unbiased=False))


def test_return_normalisation_uses_per_env_discounted_returns():
    norm = IntrinsicNormalizer("return_std", 2, 0.5, episodic=False)
    raw = torch.tensor([[1.0, 2.0], [1.0, 0.0]])
    norm(raw, torch.tensor([[True, False], [False, False]]), torch.tensor([1, 0]), [np.arange(2)])
    # env 1 (col 0): 1, 1.5 (not cut at the done: RND's intrinsic stream is non-episodic); env 0: 2, 1.
    assert norm.returns.tolist() == [1.0, 1.5]
    assert float(norm.stats.mean) == pytest.approx((1 + 1.5 + 2 + 1) / 4)
    episodic = IntrinsicNormalizer("return_std", 1, 0.5, episodic=True)
    episodic(torch.tensor([[1.0], [1.0]]), torch.tensor([[True], [False]]), torch.tensor([0]), [np.arange(1)])
    assert episodic.returns.tolist() == [1.0]


def test_unknown_bonus_name_lists_allowed(minihack_spec):
    cfg = OmegaConf.create({"name": "curiosity"})
    with pytest.raises(ValueError, match=r"bonus.name='curiosity'.*allowed: none, counts"):
        build_bonus(cfg, minihack_spec, None, 1, "cpu")
    assert build_bonus(OmegaConf.create({"name": "none"}), minihack_spec, None, 1, "cpu") is None
    assert {"e3b", "rnd", "noveld", "ride", "counts", "global_episodic"} <= set(bonus_names())


@pytest.mark.parametrize(
    "override, message",
    [
        ("bonus.normalize=mean", "bonus.normalize='mean'; allowed: none, std, return_std, reference_std"),
        ("bonus.scope=lifelong", "bonus.scope='lifelong'; allowed: episodic, global"),
        ("bonus.coef=high", "bonus.coef='high' must be of type float"),
    ],
)
def test_bad_config_values_name_the_key(minihack_spec, override, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_bonus(minihack_spec, "counts", 1, override)


def test_procgen_bonuses_run_on_pixels(procgen_spec):
    rng = np.random.default_rng(0)
    rgb = torch.from_numpy(rng.integers(0, 255, size=(5, 2, 64, 64, 3), dtype=np.uint8))
    batch = Unroll(
        obs={"rgb": rgb},
        first=torch.zeros(5, 2, dtype=torch.bool),
        actions=torch.zeros(4, 2, dtype=torch.int64),
        rewards=torch.zeros(4, 2),
        dones=torch.zeros(4, 2, dtype=torch.bool),
        logits=torch.zeros(4, 2, 15),
        core_state=(),
        env_ids=torch.arange(2),
        unroll_index=torch.zeros(2, dtype=torch.int64),
        policy_version=torch.zeros(2, dtype=torch.int64),
        actor_ids=torch.zeros(2, dtype=torch.int64),
    )
    for name in ("rnd", "noveld", "counts"):
        reward, metrics = run(make_bonus(procgen_spec, name, 2, env="procgen"), batch)
        assert reward.shape == (4, 2) and torch.isfinite(reward).all() and "bonus/int_raw_mean" in metrics
