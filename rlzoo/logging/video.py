"""Episode videos: RGB frames to an MP4 file (H.264 through imageio-ffmpeg's ffmpeg), or to a GIF when
ffmpeg cannot run."""
from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

FPS = 10
# H.264 in yuv420p wants both sides divisible by 2; ffmpeg's encoders are fastest and players most
# reliable at multiples of 16, so frames are padded (not scaled: terminal text stays sharp).
MACRO_BLOCK = 16


def pad_frame(frame: np.ndarray, multiple: int = MACRO_BLOCK) -> np.ndarray:
    """`frame` [H, W, 3] with black rows and columns added at the bottom and right up to multiples."""
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, -h % multiple), (0, -w % multiple), (0, 0)))


def write_mp4(path: Path, frames: Sequence[np.ndarray], fps: int = FPS) -> None:
    import imageio_ffmpeg

    padded = [pad_frame(f) for f in frames]
    height, width = padded[0].shape[:2]
    writer = imageio_ffmpeg.write_frames(str(path), (width, height), fps=fps, macro_block_size=MACRO_BLOCK,
                                         ffmpeg_log_level="error")
    writer.send(None)  # start ffmpeg
    try:
        for frame in padded:
            writer.send(np.ascontiguousarray(frame, dtype=np.uint8))
    finally:
        writer.close()


def write_gif(path: Path, frames: Sequence[np.ndarray], fps: int = FPS) -> None:
    import imageio.v2 as imageio

    imageio.mimwrite(path, list(frames), duration=1000 / fps, loop=0)  # duration in milliseconds


def write_video(path: Path, frames: Sequence[np.ndarray], fps: int = FPS) -> Path:
    """Write `frames` to `path` (.mp4 or .gif); an .mp4 that ffmpeg cannot write becomes a .gif beside
    it. Returns the path written."""
    if not frames:
        raise ValueError("a video needs at least one frame")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".mp4":
        try:
            write_mp4(path, frames, fps)
            return path
        except (ImportError, OSError, RuntimeError) as err:  # no imageio-ffmpeg, or its ffmpeg does not run
            path.unlink(missing_ok=True)
            path = path.with_suffix(".gif")
            warnings.warn(f"could not write MP4 ({type(err).__name__}: {err}); writing {path.name} instead",
                          stacklevel=2)
    write_gif(path, frames, fps)
    return path


def encode_video(frames: Sequence[np.ndarray], fps: int = FPS) -> tuple[bytes, str]:
    """The video as bytes and its format ("mp4", or "gif" without ffmpeg): what an evaluator sends back
    to the trainer, which may run on another machine."""
    with tempfile.TemporaryDirectory(prefix="rlzoo-video-") as tmp:
        path = write_video(Path(tmp) / "episode.mp4", frames, fps)
        return path.read_bytes(), path.suffix[1:]
