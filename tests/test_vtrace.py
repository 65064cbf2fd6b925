"""V-trace against a plain step-by-step reference written from the paper's definition (eq. 1)."""
import math

import pytest
import torch

from rlzoo.algos.vtrace import vtrace

pytestmark = pytest.mark.unit


def reference_vtrace(log_rhos, discounts, rewards, values, bootstrap, rho_bar, c_bar, pg_rho_bar):
    """v_s = V(x_s) + Σ_{t≥s} (Π_{i=s}^{t-1} γ_i c_i) ρ_t δ_t, one env and one s at a time."""
    T, B = rewards.shape
    vs = torch.zeros(T, B)
    pg = torch.zeros(T, B)
    for b in range(B):
        v = list(values[:, b]) + [bootstrap[b]]
        rho = [min(math.exp(float(log_rhos[t, b])), rho_bar) for t in range(T)]
        c = [min(math.exp(float(log_rhos[t, b])), c_bar) for t in range(T)]
        for s in range(T):
            total, prod = 0.0, 1.0
            for t in range(s, T):
                delta = rho[t] * (rewards[t, b] + discounts[t, b] * v[t + 1] - v[t])
                total += prod * delta
                prod *= discounts[t, b] * c[t]
            vs[s, b] = v[s] + total
        for s in range(T):
            v_next = vs[s + 1, b] if s + 1 < T else bootstrap[b]
            pg_rho = min(math.exp(float(log_rhos[s, b])), pg_rho_bar)
            pg[s, b] = pg_rho * (rewards[s, b] + discounts[s, b] * v_next - values[s, b])
    return vs, pg


@pytest.mark.parametrize("rho_bar,c_bar,pg_rho_bar", [(1.0, 1.0, 1.0), (2.0, 0.5, 1.5)])
def test_vtrace_matches_reference(rho_bar, c_bar, pg_rho_bar):
    g = torch.Generator().manual_seed(0)
    T, B = 7, 3
    log_rhos = torch.randn(T, B, generator=g)
    dones = torch.rand(T, B, generator=g) < 0.2
    discounts = 0.9 * (~dones).float()
    rewards = torch.randn(T, B, generator=g)
    values = torch.randn(T, B, generator=g)
    bootstrap = torch.randn(B, generator=g)

    out = vtrace(log_rhos, discounts, rewards, values, bootstrap, rho_bar, c_bar, pg_rho_bar)
    vs, pg = reference_vtrace(log_rhos, discounts, rewards, values, bootstrap, rho_bar, c_bar, pg_rho_bar)
    torch.testing.assert_close(out.vs, vs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.pg_advantages, pg, rtol=1e-5, atol=1e-5)


def test_on_policy_vtrace_is_n_step_return():
    """With π = μ (ρ = 1) and no clipping, v_s is the discounted return bootstrapped from V(x_T)."""
    T = 4
    rewards = torch.tensor([[1.0], [0.0], [2.0], [1.0]])
    discounts = torch.full((T, 1), 0.5)
    values = torch.zeros(T, 1)
    out = vtrace(torch.zeros(T, 1), discounts, rewards, values, torch.tensor([8.0]))
    # v_0 = 1 + .5·0 + .25·2 + .125·1 + .0625·8 = 2.125
    assert out.vs[0, 0].item() == pytest.approx(2.125)
    assert out.vs[3, 0].item() == pytest.approx(1 + 0.5 * 8)


def test_episode_end_cuts_bootstrap():
    rewards = torch.tensor([[1.0], [1.0]])
    discounts = torch.tensor([[0.0], [0.9]])  # the first transition ended its episode
    out = vtrace(torch.zeros(2, 1), discounts, rewards, torch.zeros(2, 1), torch.tensor([10.0]))
    assert out.vs[0, 0].item() == pytest.approx(1.0)
    assert out.vs[1, 0].item() == pytest.approx(1.0 + 0.9 * 10.0)
