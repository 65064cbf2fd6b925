"""The IMPALA-CNN ResNet (Espeholt et al. 2018), the standard Procgen encoder (Cobbe et al. 2020)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from rlzoo.envs.vec_env import EnvSpec
from rlzoo.models.layout import ToNCHW


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The inner ReLU runs in place (a convolution's backward does not read its output): the same
        # arithmetic with one batch-sized allocation fewer. The sum stays out of place so that it
        # promotes to x's dtype when x is float32 and the convolutions run in bfloat16.
        return x + self.conv1(torch.relu_(self.conv0(torch.relu(x))))


class ImpalaStage(nn.Module):
    """conv 3x3 -> max-pool 3 stride 2 -> residual blocks; halves height and width."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.blocks = nn.Sequential(*(ResidualBlock(out_channels) for _ in range(num_blocks)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.pool(self.conv(x)))


class ImpalaCNNTorso(nn.Module):
    """obs {rgb: uint8 [N, H, W, 3]} -> features [N, fc_size]."""

    input_keys = ("rgb",)

    def __init__(self, spec: EnvSpec, channels: Sequence[int], num_blocks: int, fc_size: int) -> None:
        super().__init__()
        height, width, in_channels = spec.obs_space["rgb"][0]
        stages = []
        for out_channels in channels:
            stages.append(ImpalaStage(in_channels, out_channels, num_blocks))
            in_channels = out_channels
            height, width = (height + 1) // 2, (width + 1) // 2
        self.stages = nn.Sequential(*stages)
        self.to_nchw = ToNCHW()
        self.fc = nn.Linear(in_channels * height * width, fc_size)
        self.out_dim = fc_size

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = obs["rgb"].permute(0, 3, 1, 2).float() / 255.0
        x = torch.relu(self.to_nchw(self.stages(x))).flatten(1)
        return torch.relu_(self.fc(x))
