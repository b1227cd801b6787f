"""Media helpers every stage shares, each defined once: the ffmpeg binary and the JPEG codec."""

import functools
import io
from typing import Optional

import numpy as np
from PIL import Image


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary that imageio-ffmpeg ships (nothing is downloaded)."""
    try:
        import imageio_ffmpeg  # pylint: disable=import-outside-toplevel
        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as e:
        raise RuntimeError("decoding audio and video needs the ffmpeg binary from "
                           f"imageio-ffmpeg (pip install imageio-ffmpeg): {e}") from e


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """uint8 [H, W, 3] RGB -> JPEG bytes (each builder names its quality)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def decode_jpeg(data: bytes, size: Optional[int] = None) -> np.ndarray:
    """JPEG (or any image PIL reads) bytes -> uint8 [H, W, 3] RGB; `size`: resized (bilinear) to
    size × size first."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    return np.asarray(image)


def decode_jpegs(jpegs, size: int) -> np.ndarray:
    """JPEG bytes -> float32 [N, size, size, 3] RGB in [0, 1] (what the models and the attribute
    classifiers take)."""
    return np.stack([decode_jpeg(j, size) for j in jpegs]).astype(np.float32) / 255.0


def to_uint8(image: np.ndarray) -> np.ndarray:
    """float image in [0, 1] -> uint8, rounded."""
    return (np.clip(np.asarray(image, np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
