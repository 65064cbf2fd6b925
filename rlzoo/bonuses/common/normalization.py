"""Running statistics used by the bonuses: intrinsic-reward normalisation and observation whitening."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

NORMALIZE_MODES = ("none", "std", "return_std", "reference_std")


class RunningMeanStd(nn.Module):
    """Mean and variance of every sample ever seen (parallel-variance merge, float64 buffers)."""

    def __init__(self, shape: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Merge `x` [..., *shape]: every sample counts once."""
        x = x.detach().to(torch.float64).reshape(-1, *self.mean.shape)
        # The E3B reference counted a [T, B] batch with len() (= T) and got the wrong scale; the
        # count here is the number of samples, T·B.
        n = float(x.shape[0])
        if n == 0:
            return
        batch_mean = x.mean(0)
        batch_var = x.var(0, unbiased=False)
        total = self.count + n
        delta = batch_mean - self.mean
        new_mean = self.mean + delta * (n / total)
        m2 = self.var * self.count + batch_var * n + delta.square() * (self.count * n / total)
        self.mean.copy_(new_mean)
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    def std(self) -> torch.Tensor:
        return self.var.sqrt()


class ObservationWhitener(nn.Module):
    """RND's observation normalisation: (x − mean) / std, clipped to [−clip, clip].

    The paper initialises the statistics from random-agent steps; here the first batch seen
    initialises them (the owner updates the statistics before using them).
    """

    def __init__(self, shape: tuple[int, ...], clip: float = 5.0) -> None:
        super().__init__()
        self.stats = RunningMeanStd(shape)
        self.clip = clip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        mean = self.stats.mean.float()
        std = self.stats.std().float().clamp_min(1e-8)
        return ((x - mean) / std).clamp(-self.clip, self.clip)


class ReferenceRunningStd(nn.Module):
    """The E3B reference's running "std" of the intrinsic reward, arithmetic and bug included.

    The reference (facebookresearch/e3b, minihack/torchbeast/src/models.py) counts a [T, B] batch with
    len(), i.e. T samples, while summing all T·B: its batch mean is B × the true mean, and
    std = sqrt(m2 / count) comes out about sqrt(B + B(B−1)²μ²/σ²) × the true std (≈ 20 for B = 8 when
    the bonus's mean ≈ its std). The paper's coefficients were tuned against that divisor, which no
    constant reproduces (it drifts with μ/σ), so this module recomputes it. It counts every batch as
    if it were `reference_batch` columns wide (the reference's 8), whatever rlzoo's batch shape, so the
    inflation is the paper's and not B = 64's (≈ 500 ×). docs/fidelity.md.
    """

    def __init__(self, reference_batch: int) -> None:
        super().__init__()
        self.reference_batch = reference_batch
        self.register_buffer("total", torch.zeros((), dtype=torch.float64))
        self.register_buffer("m2", torch.zeros((), dtype=torch.float64))
        self.register_buffer("count", torch.full((), 1e-8, dtype=torch.float64))  # the reference's start

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        x = x.detach().to(torch.float64).reshape(-1)
        n = x.numel() / self.reference_batch  # len() of a [N / reference_batch, reference_batch] batch
        batch_sum = x.sum()
        batch_mean = batch_sum / n
        running_mean = self.total / self.count
        self.m2 += (x - batch_mean).square().sum() + self.count * n / (self.count + n) * (batch_mean - running_mean) ** 2
        self.count += n
        self.total += batch_sum

    def std(self) -> torch.Tensor:
        return (self.m2 / self.count).sqrt()


class IntrinsicNormalizer(nn.Module):
    """Scales raw intrinsic rewards [T, B] as configured by `bonus.normalize`.

    - `none`: unchanged.
    - `std`: divided by the running std of the intrinsic rewards (no mean subtraction): what the E3B
      paper describes, with every sample counted once.
    - `reference_std`: divided by the E3B reference code's running std (`ReferenceRunningStd`), the
      divisor the paper's coefficients were tuned against.
    - `return_std`: divided by the running std of the per-environment discounted intrinsic return
      (RND's reward forward filter); the return is cut at episode ends only when `episodic`.
    The statistics are updated with the batch before it is divided, as in both references.
    """

    def __init__(self, mode: str, num_envs: int, discount: float, episodic: bool, reference_batch: int = 8) -> None:
        super().__init__()
        if mode not in NORMALIZE_MODES:
            raise ValueError(f"bonus.normalize={mode!r}; allowed: {', '.join(NORMALIZE_MODES)}")
        self.mode = mode
        self.discount = discount
        self.episodic = episodic
        self.stats = ReferenceRunningStd(reference_batch) if mode == "reference_std" else RunningMeanStd()
        self.register_buffer("returns", torch.zeros(num_envs, dtype=torch.float64))

    @torch.no_grad()
    def forward(
        self, raw: torch.Tensor, dones: torch.Tensor, env_ids: torch.Tensor, waves: list[np.ndarray]
    ) -> torch.Tensor:
        if self.mode == "none":
            return raw
        if self.mode in ("std", "reference_std"):
            self.stats.update(raw)
        else:
            self.stats.update(self._discounted_returns(raw, dones, env_ids, waves))
        std = self.stats.std().float()
        if self.mode == "reference_std":
            return raw / std if std > 0 else raw  # the reference divides only by a positive std
        return raw / std.clamp_min(1e-8)

    def _discounted_returns(
        self, raw: torch.Tensor, dones: torch.Tensor, env_ids: torch.Tensor, waves: list[np.ndarray]
    ) -> torch.Tensor:
        out = torch.empty_like(raw, dtype=torch.float64)
        keep = torch.ones_like(dones, dtype=torch.float64)
        if self.episodic:
            keep = (~dones).double()
        for cols in waves:  # one wave holds each env at most once, so carried state is per env
            idx = torch.as_tensor(cols, device=raw.device)
            ids = env_ids[idx]
            ret = self.returns[ids]
            for t in range(raw.shape[0]):
                ret = ret * self.discount + raw[t, idx].double()
                out[t, idx] = ret
                ret = ret * keep[t, idx]
            self.returns[ids] = ret
        return out

    def extra_repr(self) -> str:
        return f"mode={self.mode}"
