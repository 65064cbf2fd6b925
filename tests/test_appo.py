"""APPO's losses and GAE against hand-computed values, IMPALA's gradient and a plain GAE loop; the
whole APPO loss (`appo.py`) by hand and against IMPALA's."""
import math

import pytest
import torch

from rlzoo.algos import impala
from rlzoo.algos.appo import AppoSettings, Targets, appo_loss, gae_targets, vtrace_targets
from rlzoo.algos.ppo import (
    categorical_kl,
    clipped_surrogate_loss,
    gae,
    mean_entropy,
    mean_and_std,
    normalize_advantages,
    ratio_bounds,
    standardize,
    value_loss,
)
from rlzoo.algos.rewards import RewardMix, RewardStream, reward_streams
from rlzoo.algos.vtrace import vtrace

pytestmark = pytest.mark.unit

HALF = math.log(0.5)


def probs_logits(*rows):
    """Logits whose softmax is exactly the given probability rows."""
    return torch.tensor(rows).log()


def test_ratio_bounds_are_sample_factorys():
    low, high = ratio_bounds(0.1)
    assert high == pytest.approx(1.1)
    assert low == pytest.approx(1 / 1.1)
    for bad in (0.0, -0.2, float("nan")):
        with pytest.raises(ValueError, match="clip_ratio"):
            ratio_bounds(bad)


# Behaviour policy uniform over 2 actions; the current policy's probabilities give the ratios.
#   sample  π(·)          action  r      A    r·A    clip(r)·A   min
#   0       (.75, .25)    0       1.5    +1   1.5    1.1         1.1       (clipped)
#   1       (.75, .25)    1       0.5    +2   1.0    2/1.1       1.0
#   2       (.75, .25)    0       1.5    −1   −1.5   −1.1        −1.5
#   3       (.525, .475)  0       1.05   +1   1.05   1.05        1.05      (inside the range)
#   4       (.75, .25)    1       0.5    −1   −0.5   −1/1.1      −1/1.1    (clipped)
CURRENT = [[0.75, 0.25], [0.75, 0.25], [0.75, 0.25], [0.525, 0.475], [0.75, 0.25]]
ACTIONS = [0, 1, 0, 0, 1]
ADVANTAGES = [1.0, 2.0, -1.0, 1.0, -1.0]


def _surrogate(clip_ratio):
    logits = probs_logits(*CURRENT).requires_grad_()
    behaviour = torch.full((5, 2), HALF)
    out = clipped_surrogate_loss(logits, behaviour, torch.tensor(ACTIONS), torch.tensor(ADVANTAGES), clip_ratio)
    out.loss.backward()
    return out, logits.grad


def test_surrogate_with_clipping_matches_hand_values():
    out, grad = _surrogate(0.1)
    expected = -(1.1 + 1.0 - 1.5 + 1.05 - 1 / 1.1) / 5
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    assert out.clip_fraction.item() == pytest.approx(4 / 5)  # ratios 1.5, .5, 1.5, .5 lie outside
    kl_far = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    kl_near = 0.525 * math.log(1.05) + 0.475 * math.log(0.95)
    assert out.kl.item() == pytest.approx((4 * kl_far + kl_near) / 5, rel=1e-5)
    # The clipped samples give no gradient; the others do: d(−r·A/5)/dlogits = −A/5 · r (onehot − π).
    assert torch.all(grad[[0, 4]] == 0)
    torch.testing.assert_close(grad[3], -1.0 / 5 * 1.05 * (torch.tensor([1.0, 0.0]) - torch.tensor([0.525, 0.475])))
    torch.testing.assert_close(grad[1], -2.0 / 5 * 0.5 * (torch.tensor([0.0, 1.0]) - torch.tensor([0.75, 0.25])))


def test_surrogate_without_clipping_is_importance_weighted_advantage():
    out, grad = _surrogate(1e6)
    assert out.loss.item() == pytest.approx(-(1.5 + 1.0 - 1.5 + 1.05 - 0.5) / 5, rel=1e-5)
    assert out.clip_fraction.item() == 0.0
    assert torch.all(grad.abs().sum(-1) > 0)


def test_extreme_ratios_are_clamped_to_the_guard():
    # r = 0.3 / 0.01 = 30 with a negative advantage: the unclipped term wins the min, clamped at 20.
    logits = probs_logits([0.3, 0.7]).requires_grad_()
    out = clipped_surrogate_loss(logits, probs_logits([0.01, 0.99]), torch.tensor([0]), torch.tensor([-1.0]), 0.1)
    assert out.loss.item() == pytest.approx(20.0, rel=1e-5)
    out.loss.backward()
    assert torch.all(logits.grad == 0)


@pytest.mark.parametrize("clip_ratio", [0.1, 1e6])
def test_policy_gradient_equals_impalas_at_ratio_one(clip_ratio):
    """π = μ (first minibatch of the first epoch): ∇ mean(r·A) = ∇ Σ log π · A / N, whatever the clip."""
    g = torch.Generator().manual_seed(0)
    T, B, A = 5, 3, 4
    logits = torch.randn(T, B, A, generator=g)
    actions = torch.randint(A, (T, B), generator=g)
    advantages = torch.randn(T, B, generator=g)

    ppo_logits = logits.clone().requires_grad_()
    clipped_surrogate_loss(ppo_logits, logits, actions, advantages, clip_ratio).loss.backward()
    impala_logits = logits.clone().requires_grad_()
    impala.policy_gradient_loss(impala_logits, actions, advantages).backward()
    torch.testing.assert_close(ppo_logits.grad * (T * B), impala_logits.grad)


def test_unclipped_value_loss_gradient_equals_impalas():
    g = torch.Generator().manual_seed(1)
    values, targets = torch.randn(6, 2, generator=g), torch.randn(6, 2, generator=g)
    ppo_values = values.clone().requires_grad_()
    value_loss(ppo_values, targets).backward()
    impala_values = values.clone().requires_grad_()
    impala.baseline_loss(impala_values, targets).backward()
    # mean (V − R)² against ½ Σ (R − V)².
    torch.testing.assert_close(ppo_values.grad * values.numel() / 2, impala_values.grad)


def test_clipped_value_loss_matches_hand_values():
    values = torch.tensor([1.0, 3.0, 0.0], requires_grad=True)
    old = torch.zeros(3)
    targets = torch.tensor([2.0, 1.0, 0.5])
    # Clipped values (c = 0.5): 0.5, 0.5, 0. Per sample max((V − R)², (V_clip − R)²): 2.25, 4, 0.25.
    loss = value_loss(values, targets, old, clip_value=0.5)
    assert loss.item() == pytest.approx((2.25 + 4.0 + 0.25) / 3)
    loss.backward()
    # Sample 0 is held by its clipped term (no gradient); sample 1 by its own: 2(V − R)/3.
    torch.testing.assert_close(values.grad, torch.tensor([0.0, 4.0 / 3, -1.0 / 3]))
    assert value_loss(values, targets).item() == pytest.approx((1.0 + 4.0 + 0.25) / 3)


def test_value_loss_rejects_bad_clipping():
    v = torch.zeros(2)
    with pytest.raises(ValueError, match="clip_value"):
        value_loss(v, v, v, clip_value=0.0)
    with pytest.raises(ValueError, match="behaviour_values"):
        value_loss(v, v, clip_value=0.2)


def test_optimising_a_fixed_batch_lowers_the_surrogate_until_clipping_stops_it():
    torch.manual_seed(0)
    N, F, A, clip = 64, 8, 5, 0.2
    features = torch.randn(N, F)
    model = torch.nn.Linear(F, A)
    with torch.no_grad():
        behaviour = model(features)
        actions = torch.multinomial(torch.softmax(behaviour, -1), 1).squeeze(1)
    advantages = normalize_advantages(torch.randn(N))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    history = []
    for _ in range(60):
        out = clipped_surrogate_loss(model(features), behaviour, actions, advantages, clip)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        history.append(out)
    assert history[0].loss.item() == pytest.approx(-advantages.mean().item(), abs=1e-6)  # r = 1 at the start
    assert history[0].clip_fraction.item() == 0.0 and history[0].kl.item() == pytest.approx(0.0, abs=1e-7)
    # The clipped objective is bounded: each sample gains at most (1+c)·A (A > 0) or A/(1+c) (A < 0).
    low, high = ratio_bounds(clip)
    bound = -torch.where(advantages > 0, high * advantages, low * advantages).mean().item()
    assert min(h.loss.item() for h in history) >= bound - 1e-5
    assert history[-1].loss.item() < 0.7 * bound  # most of the attainable decrease (bound < 0)
    assert history[-1].clip_fraction.item() > 0.3 and history[-1].kl.item() > 0.01


def test_categorical_kl_is_zero_for_equal_and_matches_hand_value():
    p, q = probs_logits([0.5, 0.5]), probs_logits([0.75, 0.25])
    assert categorical_kl(p, p).item() == pytest.approx(0.0, abs=1e-7)
    assert categorical_kl(p, q).item() == pytest.approx(0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(2.0))


def test_mean_entropy():
    logits = torch.cat([torch.zeros(1, 4), probs_logits([1.0 - 3e-9, 1e-9, 1e-9, 1e-9])])
    assert mean_entropy(logits).item() == pytest.approx(math.log(4) / 2, rel=1e-4)


def reference_gae(rewards, discounts, values, bootstrap, lam):
    """Â_t = Σ_{l≥0} (Π_{i<l} γ_{t+i} λ) δ_{t+l}, one env and one t at a time (GAE paper, eq. 16)."""
    T, B = rewards.shape
    adv = torch.zeros(T, B)
    for b in range(B):
        v = list(values[:, b]) + [bootstrap[b]]
        for t in range(T):
            total, weight = 0.0, 1.0
            for k in range(t, T):
                delta = rewards[k, b] + discounts[k, b] * v[k + 1] - v[k]
                total += weight * delta
                weight *= discounts[k, b] * lam
            adv[t, b] = total
    return adv


@pytest.mark.parametrize("lam", [0.0, 0.95, 1.0])
def test_gae_matches_reference(lam):
    g = torch.Generator().manual_seed(2)
    T, B = 9, 4
    dones = torch.rand(T, B, generator=g) < 0.25
    discounts = 0.97 * (~dones).float()
    rewards, values = torch.randn(T, B, generator=g), torch.randn(T, B, generator=g)
    bootstrap = torch.randn(B, generator=g)
    out = gae(rewards, discounts, values, bootstrap, lam)
    torch.testing.assert_close(out.advantages, reference_gae(rewards, discounts, values, bootstrap, lam))
    torch.testing.assert_close(out.returns, out.advantages + values)


def test_gae_lambda_one_is_on_policy_vtrace():
    g = torch.Generator().manual_seed(3)
    T, B = 6, 2
    discounts = 0.9 * (torch.rand(T, B, generator=g) > 0.2).float()
    rewards, values, bootstrap = torch.randn(T, B, generator=g), torch.randn(T, B, generator=g), torch.randn(B)
    vs = vtrace(torch.zeros(T, B), discounts, rewards, values, bootstrap).vs
    torch.testing.assert_close(gae(rewards, discounts, values, bootstrap, 1.0).returns, vs)


def test_gae_hand_values_and_episode_end():
    rewards = torch.tensor([[1.0], [0.0], [2.0]])
    values = torch.tensor([[0.5], [1.0], [0.0]])
    discounts = torch.tensor([[0.5], [0.0], [0.5]])  # the second transition ends its episode
    out = gae(rewards, discounts, values, torch.tensor([4.0]), 0.5)
    # δ = [1 + .5·1 − .5, 0 + 0 − 1, 2 + .5·4 − 0] = [1, −1, 4];
    # Â_2 = 4, Â_1 = −1 (the episode end cuts Â_2 off), Â_0 = 1 + .5·.5·(−1).
    torch.testing.assert_close(out.advantages, torch.tensor([[0.75], [-1.0], [4.0]]))


@pytest.mark.parametrize("lam", [-0.1, 1.5])
def test_gae_rejects_bad_lambda(lam):
    with pytest.raises(ValueError, match="gae_lambda"):
        gae(torch.zeros(2, 1), torch.zeros(2, 1), torch.zeros(2, 1), torch.zeros(1), lam)


def test_normalize_advantages():
    adv = torch.tensor([1.0, 2.0, 3.0, 6.0])
    out = normalize_advantages(adv)
    assert out.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert out.std().item() == pytest.approx(1.0)
    torch.testing.assert_close(out, (adv - 3.0) / adv.std())
    assert torch.all(normalize_advantages(torch.full((5,), 2.0)) == 0)  # no division by a zero std
    with pytest.raises(ValueError, match="at least 2"):
        normalize_advantages(torch.ones(1))


def test_standardize_with_gathered_moments_equals_normalize_advantages():
    adv = torch.tensor([1.0, 2.0, 3.0, 6.0, -4.0])
    mean, std = mean_and_std(5, float(adv.sum()), float((adv * adv).sum()))
    torch.testing.assert_close(standardize(adv, mean, std), normalize_advantages(adv))
    assert standardize(torch.full((3,), 2.0), 2.0, 0.0).abs().max() == 0  # a zero std is floored
    with pytest.raises(ValueError, match="at least 2"):
        mean_and_std(1, 1.0, 1.0)


# --- the whole APPO loss ----------------------------------------------------------------------
# Two steps of one environment, behaviour μ uniform over 2 actions:
#   step  π           action  r    A     V    R   V_old   V_clip (c = 1)
#   0     (.75, .25)  0       1.5  +1    .5   1   0       .5        (V − R)² = .25 either way
#   1     (.5, .5)    1       1.0  −2    2    3   0       1         (V − R)² = 1, (V_clip − R)² = 4
# Surrogate with c = 0.1: min(1.5, 1.1)·1 and 1·(−2) → −(1.1 − 2)/2 = .45; inactive: −(1.5 − 2)/2 = .25.
def _hand_loss(clip_ratio, clip_value):
    logits = torch.cat([probs_logits([0.75, 0.25], [0.5, 0.5]), torch.zeros(1, 2)]).unsqueeze(1)  # [T+1, 1, A]
    out = {"logits": logits, "baseline": torch.tensor([[0.5], [2.0], [9.0]])}
    targets = Targets(torch.tensor([[1.0], [-2.0]]), {"baseline": torch.tensor([[1.0], [3.0]])})
    settings = AppoSettings(clip_ratio=clip_ratio, clip_value=clip_value, baseline_cost=0.5, entropy_cost=0.01)
    return appo_loss(out, torch.full((2, 1, 2), HALF), torch.tensor([[0], [1]]), targets,
                     {"baseline": torch.zeros(3, 1)}, settings)


ENTROPY = (-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) + math.log(2)) / 2
KL = (0.75 * math.log(1.5) + 0.25 * math.log(0.5)) / 2


@pytest.mark.parametrize("clip_ratio, clip_value, policy, baseline, clip_fraction", [
    (0.1, 1.0, 0.45, (0.25 + 4.0) / 2, 0.5),   # both clips active
    (1e6, 0.0, 0.25, (0.25 + 1.0) / 2, 0.0),   # neither
])
def test_appo_loss_matches_hand_values(clip_ratio, clip_value, policy, baseline, clip_fraction):
    loss = _hand_loss(clip_ratio, clip_value)
    assert loss.policy.item() == pytest.approx(policy, rel=1e-5)
    assert loss.baseline.item() == pytest.approx(baseline, rel=1e-5)
    assert loss.entropy.item() == pytest.approx(ENTROPY, rel=1e-5)
    assert loss.total.item() == pytest.approx(policy + 0.5 * baseline - 0.01 * ENTROPY, rel=1e-5)
    assert loss.clip_fraction.item() == clip_fraction
    assert loss.kl.item() == pytest.approx(KL, rel=1e-5)


def test_gae_targets_mix_two_streams_with_their_own_heads():
    # Extrinsic, λ = 1: δ = [1 + .5·0 − 0, 0 + .5·2 − 0] = [1, 1] → A = [1.5, 1], R = [1.5, 1].
    # Intrinsic: δ = [0 + 1 − 1, 2 + 1 − 1] = [0, 2] → A = [2, 2], R = [3, 3]. Mixed 2·A_ext + .5·A_int.
    streams = [RewardStream(torch.tensor([[1.0], [0.0]]), torch.full((2, 1), 0.5), "baseline", 2.0),
               RewardStream(torch.tensor([[0.0], [2.0]]), torch.ones(2, 1), "int_baseline", 0.5)]
    values = {"baseline": torch.tensor([[0.0], [0.0], [2.0]]), "int_baseline": torch.ones(3, 1)}
    out = gae_targets(values, streams, gae_lambda=1.0)
    torch.testing.assert_close(out.advantages, torch.tensor([[4.0], [3.0]]))
    torch.testing.assert_close(out.returns["baseline"], torch.tensor([[1.5], [1.0]]))
    torch.testing.assert_close(out.returns["int_baseline"], torch.tensor([[3.0], [3.0]]))


def test_with_a_huge_clip_appos_policy_gradient_is_impalas_weighted_by_the_ratio_over_n():
    """One epoch, no normalisation: APPO minimises −mean r·A, IMPALA −Σ log π·A with the same V-trace
    advantage A, so per sample ∇_logits APPO · N = r · ∇_logits IMPALA (r = 1 on the first minibatch)."""
    g = torch.Generator().manual_seed(4)
    T, B, A = 6, 3, 4
    logits = torch.randn(T + 1, B, A, generator=g)
    behaviour = logits[:-1] + 0.3 * torch.randn(T, B, A, generator=g)
    actions = torch.randint(A, (T, B), generator=g)
    rewards, dones = torch.randn(T, B, generator=g), torch.rand(T, B, generator=g) < 0.2
    baseline = torch.randn(T + 1, B, generator=g)
    mix = RewardMix(clip="none")
    settings = AppoSettings(advantages="vtrace", clip_ratio=1e6, clip_value=0.0, baseline_cost=0.0, entropy_cost=0.0,
                            pg_rho_bar=1.5)

    appo_logits = logits.clone().requires_grad_()
    out = {"logits": appo_logits, "baseline": baseline}
    targets = vtrace_targets(out, behaviour, actions, reward_streams(rewards, None, dones, mix), settings)
    appo_loss(out, behaviour, actions, targets, None, settings).total.backward()

    impala_logits = logits.clone().requires_grad_()
    impala.impala_loss({"logits": impala_logits, "baseline": baseline}, behaviour, actions, rewards, None, dones,
                       impala.ImpalaSettings(baseline_cost=0.0, entropy_cost=0.0, pg_rho_bar=1.5), mix).total.backward()

    ratio = torch.exp(impala.action_log_probs(logits[:-1], actions) - impala.action_log_probs(behaviour, actions))
    assert ratio.min() < 0.9 and ratio.max() > 1.1  # off-policy: the ratio matters
    torch.testing.assert_close(appo_logits.grad[:-1] * (T * B), ratio.unsqueeze(-1) * impala_logits.grad[:-1])
    assert torch.all(appo_logits.grad[-1] == 0) and torch.all(impala_logits.grad[-1] == 0)
