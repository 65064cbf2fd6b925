"""Networks of the bonuses: the learned embedding φ (policy-style torso) and RND's random networks."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from rlzoo.bonuses.common.normalization import ObservationWhitener
from rlzoo.models.layout import ToNCHW

NUM_GLYPHS = 5976 + 1  # nle.nethack.MAX_GLYPH, plus the id the crop uses for cells outside the map
GLYPH_EMBEDDING = 16


def dummy_obs(spec: Any, n: int = 1) -> dict[str, torch.Tensor]:
    """Zero observations [n, ...] with the spec's shapes and dtypes."""
    return {
        name: torch.from_numpy(np.zeros((n, *shape), dtype=np.dtype(dtype)))
        for name, (shape, dtype) in spec.obs_space.items()
    }


def build_embedding(model_cfg: Any, spec: Any) -> tuple[nn.Module, int]:
    """φ for E3B and RIDE: the policy's feature extractor (no recurrence) and its output size."""
    from rlzoo.models import build_torso  # the models package imports nothing from bonuses

    torso = build_torso(model_cfg, spec)
    with torch.no_grad():
        dim = int(torso(dummy_obs(spec)).shape[-1])
    return torso, dim


def embedding_model_cfg(cfg: Any, model_cfg: Any) -> Any:
    """The model config of a bonus's own network: `bonus.embedding` when set (e.g. RIDE's MiniGrid φ,
    `configs/model/minigrid_embedding.yaml`), else the policy's `model_cfg`."""
    chosen = cfg.get("embedding")
    if chosen is None:
        return model_cfg
    if not hasattr(chosen, "get") or chosen.get("name") is None:
        raise ValueError(f"bonus.embedding={chosen!r} must be null (the policy's torso) or a model config with a "
                         "name, e.g. the keys of configs/model/minigrid_embedding.yaml")
    return chosen


def mlp_head(in_dim: int, out_dim: int, hidden: int, layers: int) -> nn.Sequential:
    """`layers` hidden ReLU layers of width `hidden`, then a linear output."""
    modules: list[nn.Module] = []
    for _ in range(layers):
        modules += [nn.Linear(in_dim, hidden), nn.ReLU()]
        in_dim = hidden
    modules.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*modules)


class SymbolicTrunk(nn.Module):
    """NetHack/MiniHack feature trunk for RND: glyph embedding → convs over the crop (and, when the
    policy reads it, strided convs over the full map); whitened blstats → linear. Glyph ids are
    categorical, so only blstats are whitened."""

    def __init__(self, spec: Any, use_full_map: bool) -> None:
        super().__init__()
        self.embed = nn.Embedding(NUM_GLYPHS, GLYPH_EMBEDDING)
        self.map_conv = nn.Sequential(
            nn.Conv2d(GLYPH_EMBEDDING, 32, 3, stride=2), nn.LeakyReLU(),
            nn.Conv2d(32, 32, 3, stride=2), nn.LeakyReLU(),
            nn.Conv2d(32, 32, 3, stride=2), ToNCHW(), nn.LeakyReLU(), nn.Flatten(),
        ) if use_full_map else None
        self.crop_conv = nn.Sequential(
            nn.Conv2d(GLYPH_EMBEDDING, 32, 3), nn.LeakyReLU(),
            nn.Conv2d(32, 32, 3), ToNCHW(), nn.LeakyReLU(), nn.Flatten(),
        )
        blstats_dim = spec.obs_space["blstats"][0][0]
        self.blstats = nn.Sequential(nn.Linear(blstats_dim, 64), nn.LeakyReLU())
        with torch.no_grad():
            self.out_dim = self(dummy_obs(spec), torch.zeros(1, blstats_dim)).shape[-1]

    def forward(self, obs: dict[str, torch.Tensor], whitened_blstats: torch.Tensor) -> torch.Tensor:
        crop = self.embed(obs["crop"].long()).permute(0, 3, 1, 2)
        parts = [self.crop_conv(crop), self.blstats(whitened_blstats)]
        if self.map_conv is not None:
            parts.append(self.map_conv(self.embed(obs["glyphs"].long()).permute(0, 3, 1, 2)))
        return torch.cat(parts, dim=-1)


class PixelTrunk(nn.Module):
    """Procgen feature trunk for RND: the paper's convs (32 8×8/4, 64 4×4/2, 64 3×3/1, leaky ReLU)
    over the whitened RGB frame."""

    def __init__(self, spec: Any) -> None:
        super().__init__()
        height, width, channels = spec.obs_space["rgb"][0]
        self.conv = nn.Sequential(
            nn.Conv2d(channels, 32, 8, stride=4), nn.LeakyReLU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.LeakyReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.LeakyReLU(), nn.Flatten(),
        )
        with torch.no_grad():
            self.out_dim = self.conv(torch.zeros(1, channels, height, width)).shape[-1]

    def forward(self, obs: dict[str, torch.Tensor], whitened: torch.Tensor) -> torch.Tensor:
        return self.conv(whitened)


class GridTrunk(nn.Module):
    """MiniGrid feature trunk for RND: 3×3 convs (32, 64 stride 2, 64; leaky ReLU) over the whitened
    7×7×3 view, the pixel trunk's channels at the scale of a 7×7 input."""

    def __init__(self, spec: Any) -> None:
        super().__init__()
        height, width, channels = spec.obs_space["image"][0]
        self.conv = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.LeakyReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.LeakyReLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.LeakyReLU(), nn.Flatten(),
        )
        with torch.no_grad():
            self.out_dim = self.conv(torch.zeros(1, channels, height, width)).shape[-1]

    def forward(self, obs: dict[str, torch.Tensor], whitened: torch.Tensor) -> torch.Tensor:
        return self.conv(whitened)


# Families whose RND input is an image, whitened per pixel: the observation key and its trunk.
_IMAGE_TRUNKS = {"procgen": ("rgb", PixelTrunk), "minigrid": ("image", GridTrunk)}


class RandomNetworkDistillation(nn.Module):
    """RND's fixed random target f and trained predictor f̂ over whitened observations.

    As in Burda et al., the predictor has two more hidden layers than the target. `forward`
    returns f̂(x) − f(x) [N, out_dim]; the target never receives gradient. On NetHack/MiniHack both
    read what the policy reads: the full map only when the policy's model uses it (`use_full_map`),
    since its convolutions would otherwise cost several times the policy's own update. Procgen frames
    and MiniGrid views are whitened per pixel.
    """

    def __init__(self, spec: Any, out_dim: int, hidden: int, obs_clip: float, use_full_map: bool) -> None:
        super().__init__()
        self.image_key, trunk = _IMAGE_TRUNKS.get(spec.family, (None, None))
        if self.image_key is not None:
            height, width, channels = spec.obs_space[self.image_key][0]
            self.whitener = ObservationWhitener((channels, height, width), obs_clip)
            self.target_trunk, self.predictor_trunk = trunk(spec), trunk(spec)
        else:
            self.whitener = ObservationWhitener(tuple(spec.obs_space["blstats"][0]), obs_clip)
            self.target_trunk = SymbolicTrunk(spec, use_full_map)
            self.predictor_trunk = SymbolicTrunk(spec, use_full_map)
        self.target_head = mlp_head(self.target_trunk.out_dim, out_dim, hidden, layers=0)
        self.predictor_head = mlp_head(self.predictor_trunk.out_dim, out_dim, hidden, layers=2)
        for p in [*self.target_trunk.parameters(), *self.target_head.parameters()]:
            p.requires_grad_(False)

    def predictor_parameters(self) -> list[nn.Parameter]:
        return [*self.predictor_trunk.parameters(), *self.predictor_head.parameters()]

    def _whitened_input(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return obs[self.image_key].permute(0, 3, 1, 2) if self.image_key else obs["blstats"]

    def observe(self, obs: dict[str, torch.Tensor]) -> None:
        """Update the observation-whitening statistics with newly visited observations."""
        self.whitener.stats.update(self._whitened_input(obs).float())

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        whitened = self.whitener(self._whitened_input(obs))
        with torch.no_grad():
            target_features = self.target_trunk(obs, whitened)
        predictor_hidden = self.predictor_head[:-1](self.predictor_trunk(obs, whitened))
        # The bonus is a small difference of two outputs, so the output layers run in float32 (like
        # the trunks, the predictor's hidden layers follow the learner's precision).
        with torch.autocast(whitened.device.type, enabled=False):
            target = self.target_head(target_features.float())
            return self.predictor_head[-1](predictor_hidden.float()) - target


def mlp(in_dim: int, widths: list[int]) -> nn.Sequential:
    """Linear layers of the given widths with ReLU between them (none after the last)."""
    modules: list[nn.Module] = []
    for i, width in enumerate(widths):
        modules.append(nn.Linear(in_dim, width))
        if i < len(widths) - 1:
            modules.append(nn.ReLU())
        in_dim = width
    return nn.Sequential(*modules)


# The NovelD reference's RND heads (also its MiniHack and global × episodic variants): a 4-layer
# target and a larger 5-layer predictor, both 128 wide at the output.
NOVELD_TARGET_WIDTHS = [128, 128, 128, 128]
NOVELD_PREDICTOR_WIDTHS = [1024, 1024, 128, 128, 128]


class FrozenEncoderRND(nn.Module):
    """NovelD's random network distillation: a random encoder f (`encoder`, output size `dim`; the
    references use one of the policy's architecture), never trained, then a fixed random target MLP g
    and a trained predictor MLP ĝ on f(x); `forward` returns ĝ(f(x)) − g(f(x)) [N, 128]. No
    observation whitening, as in the references."""

    def __init__(self, encoder: nn.Module, dim: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.target = mlp(dim, NOVELD_TARGET_WIDTHS)
        self.predictor = mlp(dim, NOVELD_PREDICTOR_WIDTHS)
        for p in [*self.encoder.parameters(), *self.target.parameters()]:
            p.requires_grad_(False)

    def predictor_parameters(self) -> list[nn.Parameter]:
        return list(self.predictor.parameters())

    def forward(self, x: Any) -> torch.Tensor:
        with torch.no_grad():
            features = self.encoder(x).float()
        # The novelty is a small difference of two outputs: the heads run in float32.
        with torch.autocast(features.device.type, enabled=False):
            return self.predictor(features) - self.target(features)


class TorsoRND(nn.Module):
    """The E3B MiniHack sweep's RND baseline: target and predictor are both full policy-style torsos
    (the target random and fixed); `forward` returns f̂(s) − f(s) [N, torso.out_dim]. RIDE's MiniGrid
    RND is the same with its embedding network (`model_cfg` = bonus.embedding)."""

    def __init__(self, model_cfg: Any, spec: Any) -> None:
        super().__init__()
        self.target, _ = build_embedding(model_cfg, spec)
        self.predictor, _ = build_embedding(model_cfg, spec)
        for p in self.target.parameters():
            p.requires_grad_(False)

    def predictor_parameters(self) -> list[nn.Parameter]:
        return list(self.predictor.parameters())

    def observe(self, obs: dict[str, torch.Tensor]) -> None:
        """No observation statistics: the reference feeds observations as they are."""

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            target = self.target(obs).float()
        return self.predictor(obs).float() - target
