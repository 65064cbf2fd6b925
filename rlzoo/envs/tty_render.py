"""Draw a NetHack terminal screen (tty_chars + tty_colors) as an RGB image, for videos."""
from __future__ import annotations

import functools

import numpy as np

# NetHack's 16 colours (CLR_BLACK … CLR_WHITE); black is drawn dark grey so it stays visible.
_PALETTE = np.array(
    [
        (85, 85, 85), (205, 49, 49), (13, 188, 121), (229, 229, 16),
        (36, 114, 200), (188, 63, 188), (17, 168, 205), (204, 204, 204),
        (204, 204, 204), (245, 143, 34), (35, 209, 139), (245, 245, 67),
        (59, 142, 234), (214, 112, 214), (41, 184, 219), (255, 255, 255),
    ],
    dtype=np.uint8,
)  # fmt: skip


@functools.cache
def _glyph_atlas() -> np.ndarray:
    """[256, cell_h, cell_w] bool masks of PIL's fixed-width bitmap font (one per byte value)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default_imagefont()
    _, _, width, height = font.getbbox("@")
    atlas = np.zeros((256, height, width), dtype=bool)
    for code in range(33, 127):  # printable ASCII; everything else stays blank
        image = Image.new("L", (width, height))
        ImageDraw.Draw(image).text((0, 0), chr(code), fill=255, font=font)
        atlas[code] = np.asarray(image) > 127
    return atlas


def tty_to_rgb(tty_chars: np.ndarray, tty_colors: np.ndarray) -> np.ndarray:
    """[rows, cols] character codes and colours -> [rows*cell_h, cols*cell_w, 3] uint8 image."""
    atlas = _glyph_atlas()
    rows, cols = tty_chars.shape
    _, cell_h, cell_w = atlas.shape
    masks = atlas[tty_chars.astype(np.uint8)]  # [rows, cols, cell_h, cell_w]
    colors = _PALETTE[tty_colors.astype(np.int64) & 15]  # [rows, cols, 3]
    cells = masks[..., None] * colors[:, :, None, None, :]  # [rows, cols, cell_h, cell_w, 3]
    return cells.transpose(0, 2, 1, 3, 4).reshape(rows * cell_h, cols * cell_w, 3).astype(np.uint8)
