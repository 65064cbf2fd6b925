"""The NetHack/MiniHack feature extractor of the NLE and MiniHack baselines (Küttler et al. 2020;
Samvelyan et al. 2021): glyph embedding, conv stacks over the full map and the agent-centred crop,
an MLP over the bottom-line stats and an optional char-CNN over the message."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from nle import nethack
from torch import nn

from rlzoo.envs.vec_env import EnvSpec
from rlzoo.models.layout import ToNCHW

NUM_GLYPHS = nethack.MAX_GLYPH + 1  # MAX_GLYPH itself marks cells outside the map in the crop

# Fixed per-field treatment of the 27 blstats, so every input lands around [-1, 1] … [0, ~15]:
# bounded fields are divided by their range, unbounded counters are log-compressed, current HP and
# energy become fractions of their maxima, and the condition bitmask is unpacked into bits.
_BL_SCALE = {
    nethack.NLE_BL_X: 79, nethack.NLE_BL_Y: 21, nethack.NLE_BL_STR25: 25,
    nethack.NLE_BL_STR125: 125, nethack.NLE_BL_DEX: 25, nethack.NLE_BL_CON: 25,
    nethack.NLE_BL_INT: 25, nethack.NLE_BL_WIS: 25, nethack.NLE_BL_CHA: 25,
    nethack.NLE_BL_DEPTH: 50, nethack.NLE_BL_AC: 10, nethack.NLE_BL_HD: 30,
    nethack.NLE_BL_XP: 30, nethack.NLE_BL_HUNGER: 6, nethack.NLE_BL_CAP: 5,
    nethack.NLE_BL_DNUM: 10, nethack.NLE_BL_DLEVEL: 50, nethack.NLE_BL_ALIGN: 1,
}  # fmt: skip
_BL_LOG = (
    nethack.NLE_BL_SCORE, nethack.NLE_BL_HPMAX, nethack.NLE_BL_GOLD, nethack.NLE_BL_ENEMAX,
    nethack.NLE_BL_EXP, nethack.NLE_BL_TIME,
)  # fmt: skip
_BL_RATIO = ((nethack.NLE_BL_HP, nethack.NLE_BL_HPMAX), (nethack.NLE_BL_ENE, nethack.NLE_BL_ENEMAX))
_CONDITION_MASKS = tuple(
    getattr(nethack, name)
    for name in sorted(dir(nethack))
    if name.startswith("BL_MASK_") and name != "BL_MASK_BITS"  # BL_MASK_BITS is their count
)
NUM_BLSTATS = 27


class BlstatsNormalizer(nn.Module):
    """int blstats [N, 27] -> float features [N, 26 + number of condition bits]."""

    def __init__(self) -> None:
        super().__init__()
        scale = torch.ones(NUM_BLSTATS)
        for index, value in _BL_SCALE.items():
            scale[index] = value
        log_mask = torch.zeros(NUM_BLSTATS, dtype=torch.bool)
        log_mask[list(_BL_LOG)] = True
        keep = torch.ones(NUM_BLSTATS, dtype=torch.bool)
        keep[nethack.NLE_BL_CONDITION] = False
        self.register_buffer("scale", scale, persistent=False)
        self.register_buffer("log_mask", log_mask, persistent=False)
        self.register_buffer("keep", keep, persistent=False)
        masks = torch.tensor(_CONDITION_MASKS, dtype=torch.int64)
        self.register_buffer("masks", masks, persistent=False)
        self.out_dim = int(keep.sum()) + len(_CONDITION_MASKS)

    def forward(self, blstats: torch.Tensor) -> torch.Tensor:
        raw = blstats.float()
        x = torch.where(self.log_mask, torch.sign(raw) * torch.log1p(raw.abs()), raw / self.scale)
        for value, maximum in _BL_RATIO:
            x[:, value] = raw[:, value] / raw[:, maximum].clamp(min=1.0)
        bits = (blstats[:, nethack.NLE_BL_CONDITION, None].long() & self.masks) != 0
        return torch.cat([x[:, self.keep], bits.float()], dim=1)


def conv_stack(in_channels: int, channels: Sequence[int]) -> nn.Sequential:
    """3x3 'same' convolutions with ELU after each, as in the NLE baseline."""
    layers: list[nn.Module] = []
    for out_channels in channels:
        layers += [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ELU()]
        in_channels = out_channels
    layers.insert(len(layers) - 1, ToNCHW())  # parameter-free, so the convs keep their state_dict keys
    return nn.Sequential(*layers)


def mlp(in_dim: int, sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for size in sizes:
        layers += [nn.Linear(in_dim, size), nn.ReLU()]
        in_dim = size
    return nn.Sequential(*layers)


class MessageCharCNN(nn.Module):
    """Character-level CNN over the 256-byte message: byte embedding -> 1-D convs -> max over
    positions -> linear."""

    def __init__(self, embedding_dim: int, out_dim: int, channels: int = 64) -> None:
        super().__init__()
        self.embedding = nn.Embedding(256, embedding_dim)
        self.convs = nn.Sequential(
            nn.Conv1d(embedding_dim, channels, 7), nn.ReLU(), nn.MaxPool1d(3),
            nn.Conv1d(channels, channels, 7), nn.ReLU(), nn.MaxPool1d(3),
            nn.Conv1d(channels, channels, 3), nn.ReLU(),
        )  # fmt: skip
        self.out = nn.Sequential(nn.Linear(channels, out_dim), nn.ReLU())
        self.out_dim = out_dim

    def forward(self, message: torch.Tensor) -> torch.Tensor:
        x = self.embedding(message.long()).transpose(1, 2)  # [N, E, 256]
        return self.out(self.convs(x).amax(dim=2))


class NetHackTorso(nn.Module):
    """obs {glyphs, crop, blstats, message} [N, ...] -> features [N, out_dim]."""

    def __init__(
        self,
        spec: EnvSpec,
        glyph_embedding_dim: int,
        use_full_map: bool,
        map_channels: Sequence[int],
        crop_channels: Sequence[int],
        blstats_hidden: Sequence[int],
        use_message: bool,
        message_embedding_dim: int,
        message_out_dim: int,
        fc_sizes: Sequence[int],
    ) -> None:
        super().__init__()
        self.use_full_map = use_full_map
        self.use_message = use_message
        self.input_keys = ("crop", "blstats") + (("glyphs",) if use_full_map else ()) + (
            ("message",) if use_message else ()
        )
        self.glyph_embedding = nn.Embedding(NUM_GLYPHS, glyph_embedding_dim)
        crop_h, crop_w = spec.obs_space["crop"][0]
        self.crop_cnn = conv_stack(glyph_embedding_dim, crop_channels)
        concat_dim = crop_channels[-1] * crop_h * crop_w
        if use_full_map:
            map_h, map_w = spec.obs_space["glyphs"][0]
            self.map_cnn = conv_stack(glyph_embedding_dim, map_channels)
            concat_dim += map_channels[-1] * map_h * map_w
        self.blstats_norm = BlstatsNormalizer()
        self.blstats_mlp = mlp(self.blstats_norm.out_dim, blstats_hidden)
        concat_dim += blstats_hidden[-1]
        if use_message:
            self.message_cnn = MessageCharCNN(message_embedding_dim, message_out_dim)
            concat_dim += message_out_dim
        self.fc = mlp(concat_dim, fc_sizes)
        self.out_dim = fc_sizes[-1]

    def _embed(self, glyphs: torch.Tensor) -> torch.Tensor:
        return self.glyph_embedding(glyphs.long()).permute(0, 3, 1, 2)  # [N, E, H, W]

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = [self.crop_cnn(self._embed(obs["crop"])).flatten(1)]
        if self.use_full_map:
            parts.append(self.map_cnn(self._embed(obs["glyphs"])).flatten(1))
        parts.append(self.blstats_mlp(self.blstats_norm(obs["blstats"])))
        if self.use_message:
            parts.append(self.message_cnn(obs["message"]))
        return self.fc(torch.cat(parts, dim=1))
