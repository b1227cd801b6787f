"""What the toy world's build checks before it writes a byte (docs/failures.md)."""

import os
from typing import Optional

import tensorflow as tf

from speech2face.models import vggface

# What the build holds in memory per speaker (faces, features, waveforms, spectrograms, JPEGs at
# the default sizes; ~6.5 MB measured), with headroom; the build refuses sizes that cannot fit.
BYTES_PER_SPEAKER = 8 * 2**20


def _available_memory_bytes() -> Optional[int]:
    """MemAvailable from /proc/meminfo (Linux), else None (the check is skipped)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_before_building(config, output_dir: str) -> None:
    """Everything `build_toy_world` checks before it writes a byte: the config, the weights
    file, the output directory (new or empty: the build never writes over a user's files) and
    the memory the build needs. Raises ValueError, FileExistsError or `vggface.WeightsFileError`
    with the fix in the message."""
    config.validate()
    if config.vggface_weights is not None:
        vggface.check_weights_file(config.vggface_weights, layers=("fc7",))
    if os.path.exists(output_dir):
        if not os.path.isdir(output_dir):
            raise FileExistsError(f"{output_dir} is a file, not a directory; choose a new or "
                                  "empty directory for the toy world")
        existing = tf.io.gfile.glob(os.path.join(output_dir, "*.tfrecord"))
        if existing:
            raise FileExistsError(f"{output_dir} already holds {len(existing)} record files; "
                                  "choose an empty directory or delete them first")
        entries = sorted(os.listdir(output_dir))
        if entries:
            raise FileExistsError(
                f"{output_dir} is not empty ({', '.join(entries[:3])}"
                f"{', ...' if len(entries) > 3 else ''}); the toy world is written only into a "
                "new or empty directory, so that it never overwrites your files")
    need, free = config.num_speakers * BYTES_PER_SPEAKER, _available_memory_bytes()
    if free is not None and need > free:
        raise ValueError(
            f"num_speakers={config.num_speakers} needs about {need / 2**30:.1f} GiB of memory "
            f"(~{BYTES_PER_SPEAKER // 2**20} MiB per speaker) and {free / 2**30:.1f} GiB is "
            "available; choose fewer speakers")
