"""Feature extractor over the NetHack terminal (tty_chars, tty_colors, tty_cursor), the observation
the NLD datasets record (Hambro et al. 2022). As in their baseline (itself after the "Chaotic Dwarf"
NetHack Challenge agent) the screen is read in three parts: the top line (messages) and the two
bottom lines (status) as text, and the map as an image; a CNN sees a crop around the cursor (where
NetHack keeps it: on the hero, or on a prompt) and a strided CNN the whole screen. Unlike the
baseline, which renders the characters to pixels, each cell is a learned embedding of its
character and its colour.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from rlzoo.models.layout import ToNCHW
from rlzoo.models.nethack_net import conv_stack, mlp

TTY_ROWS, TTY_COLS = 24, 80
NUM_CHARS = 256
# 16 colours, +16 in reverse video (as NLE and nle.dataset's converter encode them).
NUM_COLORS = 32
STATUS_ROWS = 2
# Character 0 never appears on a terminal (blanks are spaces): it marks crop cells off the screen.
OFF_SCREEN = 0


def crop_around(grid: torch.Tensor, centre: torch.Tensor, size: int) -> torch.Tensor:
    """[N, C, H, W] -> the [N, C, size, size] windows centred on `centre` [N, 2] (row, column);
    cells outside the grid read OFF_SCREEN. `size` is odd."""
    n, channels, height, width = grid.shape
    half = size // 2
    padded = nn.functional.pad(grid, (half, half, half, half), value=OFF_SCREEN)
    # Row r of the grid is row r + half of `padded`, so the window's top-left is (r, c) there.
    row = centre[:, 0].long().clamp(0, height - 1)
    col = centre[:, 1].long().clamp(0, width - 1)
    offsets = torch.arange(size, device=grid.device)
    rows = (row[:, None] + offsets)[:, :, None]  # [N, size, 1]
    cols = (col[:, None] + offsets)[:, None, :]  # [N, 1, size]
    index = (rows * (width + 2 * half) + cols).view(n, 1, size * size).expand(n, channels, -1)
    return padded.flatten(2).gather(2, index).view(n, channels, size, size)


def strided_conv_stack(in_channels: int, channels: Sequence[int]) -> nn.Sequential:
    """3x3 convolutions of stride 2 with ELU after each: each halves the height and width."""
    layers: list[nn.Module] = []
    for out_channels in channels:
        layers += [nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1), nn.ELU()]
        in_channels = out_channels
    layers.insert(len(layers) - 1, ToNCHW())
    return nn.Sequential(*layers)


def halved(size: int, times: int) -> int:
    """Length after `times` stride-2, padding-1, kernel-3 convolutions."""
    for _ in range(times):
        size = (size + 1) // 2
    return size


class TopLineEncoder(nn.Module):
    """Message line: character embeddings -> two 1-D convs -> max over positions -> linear. Where
    a word stands on the line carries no meaning, hence the max."""

    def __init__(self, embedding_dim: int, channels: int, out_dim: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv1d(embedding_dim, channels, 3, padding=1), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.out = nn.Sequential(nn.Linear(channels, out_dim), nn.ReLU())

    def forward(self, line: torch.Tensor) -> torch.Tensor:  # [N, E, 80]
        return self.out(self.convs(line).amax(dim=2))


class StatusEncoder(nn.Module):
    """Status lines: character embeddings -> two strided 1-D convs -> linear over all positions
    (the fields of the status lines sit at fairly stable places)."""

    def __init__(self, embedding_dim: int, channels: int, out_dim: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv1d(embedding_dim, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
        )  # fmt: skip
        length = halved(STATUS_ROWS * TTY_COLS, 2)
        self.out = nn.Sequential(nn.Linear(channels * length, out_dim), nn.ReLU())

    def forward(self, lines: torch.Tensor) -> torch.Tensor:  # [N, E, 2 * 80]
        return self.out(self.convs(lines).flatten(1))


class TtyTorso(nn.Module):
    """obs {tty_chars, tty_colors, tty_cursor} [N, ...] -> features [N, out_dim]."""

    input_keys = ("tty_chars", "tty_colors", "tty_cursor")

    def __init__(
        self,
        char_embedding_dim: int,
        color_embedding_dim: int,
        text_channels: int,
        message_out_dim: int,
        status_out_dim: int,
        crop_size: int,
        crop_channels: Sequence[int],
        screen_channels: Sequence[int],
        fc_sizes: Sequence[int],
    ) -> None:
        super().__init__()
        self.crop_size = crop_size
        self.char_embedding = nn.Embedding(NUM_CHARS, char_embedding_dim)
        self.color_embedding = nn.Embedding(NUM_COLORS, color_embedding_dim)
        cell_dim = char_embedding_dim + color_embedding_dim
        self.top_line = TopLineEncoder(char_embedding_dim, text_channels, message_out_dim)
        self.status = StatusEncoder(char_embedding_dim, text_channels, status_out_dim)
        self.crop_cnn = conv_stack(cell_dim, crop_channels)
        self.screen_cnn = strided_conv_stack(cell_dim, screen_channels)
        screen_cells = halved(TTY_ROWS, len(screen_channels)) * halved(TTY_COLS, len(screen_channels))
        concat_dim = (
            message_out_dim
            + status_out_dim
            + crop_channels[-1] * crop_size * crop_size
            + screen_channels[-1] * screen_cells
            + 2  # the cursor's position
        )
        self.fc = mlp(concat_dim, fc_sizes)
        self.out_dim = fc_sizes[-1]
        self.register_buffer("screen_scale", torch.tensor([TTY_ROWS - 1, TTY_COLS - 1]), persistent=False)

    def _cells(self, chars: torch.Tensor, colors: torch.Tensor) -> torch.Tensor:
        """[N, H, W] character and colour codes -> [N, E, H, W] cell embeddings."""
        cells = torch.cat([self.char_embedding(chars), self.color_embedding(colors)], dim=-1)
        return cells.permute(0, 3, 1, 2)

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        chars, colors = obs["tty_chars"].long(), obs["tty_colors"].long()
        cursor = obs["tty_cursor"]
        text = self.char_embedding(torch.cat([chars[:, 0], chars[:, -STATUS_ROWS:].flatten(1)], dim=1))
        text = text.transpose(1, 2)  # [N, E, 80 + 160]
        codes = torch.stack([chars, colors], dim=1)  # crop codes before embedding: fewer cells to copy
        crop = crop_around(codes, cursor, self.crop_size)
        parts = [
            self.top_line(text[:, :, :TTY_COLS]),
            self.status(text[:, :, TTY_COLS:]),
            self.crop_cnn(self._cells(crop[:, 0], crop[:, 1])).flatten(1),
            self.screen_cnn(self._cells(chars, colors)).flatten(1),
            cursor.float() / self.screen_scale,
        ]
        return self.fc(torch.cat(parts, dim=1))
