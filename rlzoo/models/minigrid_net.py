"""The MiniGrid network of RIDE (Raileanu & Rocktäschel 2020), also AMIGo's and NovelD's baseline:
3×3 stride-2 convolutions with ELU over the 7×7×3 egocentric view read as floats, then an MLP. With
no MLP and a 1/255 input scale it is RIDE's state embedding φ (`configs/model/minigrid_embedding.yaml`)."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from rlzoo.envs.vec_env import EnvSpec
from rlzoo.models.layout import ToNCHW


def orthogonal_init(module: nn.Module, gain: float) -> nn.Module:
    """Orthogonal weights and zero biases for every conv and linear layer (the reference's init)."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.orthogonal_(layer.weight, gain=gain)
            nn.init.zeros_(layer.bias)
    return module


class MiniGridTorso(nn.Module):
    """obs {image: uint8 [N, 7, 7, 3]} -> features [N, out_dim]."""

    input_keys = ("image",)

    def __init__(self, spec: EnvSpec, conv_channels: Sequence[int], fc_sizes: Sequence[int],
                 input_scale: float) -> None:
        super().__init__()
        height, width, in_channels = spec.obs_space["image"][0]
        layers: list[nn.Module] = []
        for out_channels in conv_channels:
            layers += [nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1), nn.ELU()]
            in_channels = out_channels
            height, width = math.ceil(height / 2), math.ceil(width / 2)
        layers.insert(len(layers) - 1, ToNCHW())  # parameter-free: see models/layout.py
        self.convs = nn.Sequential(*layers)
        fc: list[nn.Module] = []
        in_dim = in_channels * height * width
        for size in fc_sizes:
            fc += [nn.Linear(in_dim, size), nn.ReLU()]
            in_dim = size
        self.fc = nn.Sequential(*fc)
        self.input_scale = input_scale
        self.out_dim = in_dim
        orthogonal_init(self, nn.init.calculate_gain("relu"))

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = obs["image"].permute(0, 3, 1, 2).float() * self.input_scale
        return self.fc(self.convs(x).flatten(1))
