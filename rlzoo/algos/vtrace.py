"""V-trace off-policy targets (Espeholt et al. 2018, "IMPALA", eq. 1 and section 4.2).

A pure function over [T, B] tensors, computed backwards in time without gradient.
"""
from __future__ import annotations

from typing import NamedTuple

import torch


class VTraceReturns(NamedTuple):
    vs: torch.Tensor             # [T, B] value targets v_s
    pg_advantages: torch.Tensor  # [T, B] ρ_s (r_s + γ v_{s+1} − V(x_s)), with ρ clipped at pg_rho_bar


@torch.no_grad()
def vtrace(
    log_rhos: torch.Tensor,
    discounts: torch.Tensor,
    rewards: torch.Tensor,
    values: torch.Tensor,
    bootstrap_value: torch.Tensor,
    rho_bar: float = 1.0,
    c_bar: float = 1.0,
    pg_rho_bar: float = 1.0,
) -> VTraceReturns:
    """V-trace targets from log π/μ of the taken actions.

    `discounts[t]` is γ·(1 − done_t): zero where transition t ended the episode, so nothing is
    bootstrapped across an episode boundary. `bootstrap_value` [B] is V(x_T).
    """
    rhos = torch.exp(log_rhos)
    clipped_rhos = torch.clamp(rhos, max=rho_bar)
    cs = torch.clamp(rhos, max=c_bar)

    values_tp1 = torch.cat([values[1:], bootstrap_value.unsqueeze(0)], dim=0)
    deltas = clipped_rhos * (rewards + discounts * values_tp1 - values)

    # v_s − V(x_s) = δ_s + γ_s c_s (v_{s+1} − V(x_{s+1})), accumulated from the end.
    acc = torch.zeros_like(bootstrap_value)
    vs_minus_v = torch.empty_like(values)
    for t in reversed(range(values.shape[0])):
        acc = deltas[t] + discounts[t] * cs[t] * acc
        vs_minus_v[t] = acc
    vs = vs_minus_v + values

    vs_tp1 = torch.cat([vs[1:], bootstrap_value.unsqueeze(0)], dim=0)
    pg_rhos = torch.clamp(rhos, max=pg_rho_bar)
    pg_advantages = pg_rhos * (rewards + discounts * vs_tp1 - values)
    return VTraceReturns(vs=vs, pg_advantages=pg_advantages)
