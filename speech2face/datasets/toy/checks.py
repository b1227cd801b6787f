"""What the toy world's build checks before it writes a byte (docs/failures.md)."""

import datetime
import glob
import json
import os
import socket
from typing import Optional

from absl import logging
import tensorflow as tf

from speech2face import audio, errors, records
from speech2face.models import vggface

# What the build holds in memory (docs/failures.md): per face its render, VGG-Face feature and
# JPEG; per clip its float32 waveform and, in the spectrogram layouts, its float32 spectrogram
# (598 x 257 x 2). The default world measures ~6.5 MB per speaker; HEADROOM covers the rest.
BYTES_PER_FACE = 256 * 2**10
SPECTROGRAM_BYTES = 598 * 257 * 2 * 4
HEADROOM = 1.25


def memory_needed(config) -> int:
    """Bytes the build of `config` holds at its peak (with headroom): it grows with the
    speakers, their clips and faces, and the clips' length."""
    mean_seconds = (config.min_seconds + config.max_seconds) / 2
    per_clip = mean_seconds * audio.SAMPLE_RATE * 4
    if records.spectrogram_dtype_of(config.records_layout) is not None:
        per_clip += SPECTROGRAM_BYTES
    per_speaker = config.faces_per_speaker * BYTES_PER_FACE + config.clips_per_speaker * per_clip
    return int(config.num_speakers * per_speaker * HEADROOM)


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
        # A build killed outright (SIGKILL, out of memory) left its claim: its files are
        # removed by `claim`, the rest must be empty as always. A live build's claim refuses.
        leftovers = set(_leftovers(output_dir)) if _dead_claim(output_dir) else set()
        existing = [p for p in tf.io.gfile.glob(os.path.join(output_dir, "*.tfrecord"))
                    if os.path.basename(p) not in leftovers]
        if existing:
            raise FileExistsError(f"{output_dir} already holds {len(existing)} record files; "
                                  "choose an empty directory or delete them first")
        entries = sorted(set(os.listdir(output_dir)) - leftovers)
        if entries:
            raise FileExistsError(
                f"{output_dir} is not empty ({', '.join(entries[:3])}"
                f"{', ...' if len(entries) > 3 else ''}); the toy world is written only into a "
                "new or empty directory, so that it never overwrites your files")
    need, free = memory_needed(config), _available_memory_bytes()
    if free is not None and need > free:
        raise ValueError(
            f"num_speakers={config.num_speakers} x clips_per_speaker={config.clips_per_speaker} "
            f"(up to {config.max_seconds:g} s) and faces_per_speaker={config.faces_per_speaker} "
            f"need about {need / 2**30:.1f} GiB of memory and {free / 2**30:.1f} GiB is "
            "available; choose fewer speakers, clips or faces, or shorter clips")


# Made (O_EXCL) in the output directory by the build that owns it, removed when it is done. It
# holds the pid, host and start time of that build (JSON, as training's train.lock).
CLAIM_FILE = ".make_toy_world.pid"


def _holder(path: str) -> dict:
    """What the claim file at `path` says ({} when it is gone or unreadable; an older build
    wrote its pid alone)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return {}
    try:
        holder = json.loads(text)
    except ValueError:
        return {}
    return {"pid": holder} if isinstance(holder, int) else holder if isinstance(holder, dict) else {}


def _dead_claim(output_dir: str) -> Optional[dict]:
    """The holder of `output_dir`'s claim when its process is gone on this host (a build killed
    outright); None when there is no claim. A live build's claim, or one of another host (its
    process cannot be checked), raises FileExistsError."""
    path = os.path.join(output_dir, CLAIM_FILE)
    if not os.path.exists(path):
        return None
    holder = _holder(path)
    pid, host = holder.get("pid"), holder.get("host", socket.gethostname())
    if isinstance(pid, int) and host == socket.gethostname() and not errors.process_alive(pid):
        return holder
    if not os.path.exists(path):  # it finished in between
        return None
    raise FileExistsError(
        f"{output_dir} is being written by another make_toy_world run (pid {pid or '?'} on "
        f"{host}, since {holder.get('started', '?')}; claim file {path}): wait for it, or "
        "choose another directory. If that run is gone for good (another host), delete the "
        "claim file and what it wrote")


def _leftovers(output_dir: str):
    """The names in `output_dir` that a build writes (`_BUILD_FILES`)."""
    return sorted({os.path.basename(path) for pattern in _BUILD_FILES
                   for path in glob.glob(os.path.join(glob.escape(output_dir), pattern))})


def claim(output_dir: str) -> str:
    """Creates `output_dir` and makes this build its only writer: two builds started at once on
    one directory both pass `check_before_building`, and only one may create the claim file;
    the other is refused (FileExistsError) before it writes. A claim whose build was killed
    outright (its pid is gone on this host) is taken over: that build's files are removed
    first. Returns the claim's path; the build removes it when the world is complete, or when
    it fails or is stopped (Ctrl-C, SIGTERM: `discard`)."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, CLAIM_FILE)
    owner = {"pid": os.getpid(), "host": socket.gethostname(),
             "started": datetime.datetime.now().isoformat(timespec="seconds")}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            dead = _dead_claim(output_dir)  # raises for a live build
            if dead is not None:
                logging.warning("Taking over %s: its build (pid %s on %s) is gone; removing "
                                "what it wrote (%s).", output_dir, dead.get("pid"),
                                dead.get("host", owner["host"]),
                                ", ".join(_leftovers(output_dir)))
                discard(output_dir, created=False)
    else:
        raise FileExistsError(f"{path}: could not claim {output_dir}; retry")
    with os.fdopen(fd, "w") as f:
        json.dump(owner, f)
    others = sorted(set(os.listdir(output_dir)) - {CLAIM_FILE})
    if others:  # another build claimed, wrote and finished in between
        os.remove(path)
        raise FileExistsError(f"{output_dir} is not empty ({', '.join(others[:3])}); choose a "
                              "new or empty directory")
    return path


# What a build writes (records, their .tmp names, the random weights, the JSON files).
_BUILD_FILES = ("train-*.tfrecord*", "test-*.tfrecord*", "vggface_random_seed*.h5*",
                "speakers.json", "dataset_info.json*", CLAIM_FILE)


def discard(output_dir: str, created: bool) -> None:
    """Removes what a failed build wrote into `output_dir` (only the build's own file names),
    and the directory itself when the build created it and it is empty again."""
    for pattern in _BUILD_FILES:
        for path in glob.glob(os.path.join(glob.escape(output_dir), pattern)):
            os.remove(path)
    if created and os.path.isdir(output_dir) and not os.listdir(output_dir):
        os.rmdir(output_dir)
