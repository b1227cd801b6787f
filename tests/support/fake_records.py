"""Small hand-made record sets for schema and input-pipeline tests."""

import io
import os

import numpy as np
from PIL import Image

from speech2face import records


def make_example(index: int, num_frames: int = 7, with_extras: bool = True,
                 layout: str = records.DEFAULT_LAYOUT) -> records.Example:
    """Example `index` with values derived from the index, so readers can be checked exactly.
    A waveform_int16 example has no spectrogram and 6 s + 400 + index samples of waveform."""
    rng = np.random.default_rng(index)
    jpeg = b""
    landmarks = waveform = None
    if with_extras:
        buffer = io.BytesIO()
        Image.fromarray(
            np.full((records.FACE_SIZE, records.FACE_SIZE, 3), index % 256, np.uint8)
        ).save(buffer, format="JPEG")
        jpeg = buffer.getvalue()
        landmarks = rng.uniform(0, records.FACE_SIZE, (records.NUM_LANDMARKS, 2)).astype(np.float32)
        waveform = rng.integers(-32768, 32767, 400 + index, dtype=np.int16)
    spectrogram = rng.standard_normal((num_frames, records.NUM_FREQ_BINS, 2)).astype(np.float32)
    if layout == records.WAVEFORM_LAYOUT:
        spectrogram = None
        waveform = rng.integers(-32768, 32767, records.SEGMENT_SAMPLES + 400 + index,
                                dtype=np.int16)
    return records.Example(
        spectrogram=spectrogram,
        face_feature=rng.random(records.FEATURE_DIM, dtype=np.float32),
        speaker_id=f"spk{index // 3:03d}",
        clip_id=f"clip{index:05d}",
        source="toy",
        face_jpeg=jpeg,
        landmarks=landmarks,
        waveform=waveform,
    )


def write_record_files(
    directory,
    num_files: int,
    per_file: int,
    num_frames: int = 7,
    layout: str = records.DEFAULT_LAYOUT,
    prefix: str = "train",
    landmarks_fn=None,
):
    """Writes `num_files` shards of `per_file` examples; returns (glob pattern, clip ids).

    `landmarks_fn(index)`, if given, sets example `index`'s [68, 2] pixel landmarks (the default
    ones are uniform noise, which no face filter keeps)."""
    clip_ids = []
    for f in range(num_files):
        with records.ShardedWriter(
            os.path.join(directory, f"{prefix}{f}"), layout=layout
        ) as writer:
            for i in range(per_file):
                example = make_example(f * per_file + i, num_frames, layout=layout)
                if landmarks_fn is not None:
                    example.landmarks = np.asarray(landmarks_fn(f * per_file + i), np.float32)
                writer.write(example)
                clip_ids.append(example.clip_id)
    return os.path.join(directory, f"{prefix}*.tfrecord"), clip_ids
