"""Builds the toy world (docs/toy_world.md): speakers, voices, faces, features, records, self-check.

The world goes through the same interfaces as real data: clips through `speech2face.audio`
(fit to 6 s, spectrogram), face crops through `speech2face.models.vggface.FaceFeatureExtractor`
(loaded from an rcmalli-layout weights file by the real loader), examples through
`speech2face.records`. Only the VGG-Face weights differ: no pretrained weights can be had here,
so by default a seeded random initialisation is written next to the data and named in
`dataset_info.json` (pass real weights with `vggface_weights` to use them instead).

Output directory:
    train-NNNNN.tfrecord, test-NNNNN.tfrecord   records in the one schema (speaker-disjoint)
    dataset_info.json                           counts, config, attributes, self-check, files
    speakers.json                               per speaker: split and latent attributes
    vggface_random_seed{S}.h5                   the teacher weights used (unless given)
"""

import dataclasses
import json
import os
import threading
import time
from typing import Dict, List, Optional

from absl import logging
import numpy as np
import tensorflow as tf

from speech2face.datasets.toy import face as toy_face, speakers as toy_speakers, voice as toy_voice
from speech2face.datasets.toy import voice_stats as toy_voice_stats
from speech2face.datasets.toy.checks import check_before_building, claim, discard
from speech2face.datasets.toy.speakers import SPEAKERS_FILE
from speech2face import audio, media, records
from speech2face.records import dataset_info
from speech2face.evaluation import probe
from speech2face.models import vggface

JPEG_QUALITY = 92  # of the stored face renders

MIN_PROBE_SPEAKERS = 5


@dataclasses.dataclass(frozen=True)
class ToyWorldConfig:
    """Size and randomness of a toy world.

    Attributes:
      num_speakers: speakers in total (train + test).
      clips_per_speaker: voice clips per speaker.
      faces_per_speaker: face renders per speaker (pose and light vary); clip i of a speaker is
        paired with face i % faces_per_speaker. Each face costs one VGG-Face pass (~0.1 s here).
      test_fraction: share of speakers held out for the test split.
      min_seconds, max_seconds: clip lengths are uniform in this range; the records hold the
        clip itself (tiled to at least 6 s) as an int16 waveform for random-crop training, and
        in the spectrogram layouts the spectrogram of its first 6 s.
      seed: everything is a function of this seed.
      records_layout: one of `records.LAYOUTS` (docs/data.md, "Record layouts"):
        waveform_int16 (the toy world's default: no spectrogram stored, its readers compute it
        from the waveform; a quarter of the bytes, and no spectrograms to compute while
        building), spectrogram_float16 or spectrogram_float32.
      vggface_weights: an rcmalli-layout VGG-Face .h5; None writes seeded random weights.
      max_shard_bytes: shard size of the record files.
    """

    # 300 speakers with one face and two clips each cost what 150 with two faces and four clips
    # did (300 VGG-Face passes, 600 clips) and give the encoder twice the identities to learn
    # from and the evaluation twice the held-out speakers (docs/toy_world.md, "The world").
    num_speakers: int = 300
    clips_per_speaker: int = 2
    faces_per_speaker: int = 1
    test_fraction: float = 0.2
    seed: int = 0
    vggface_weights: Optional[str] = None
    min_seconds: float = 2.0
    max_seconds: float = 8.0
    records_layout: str = records.WAVEFORM_LAYOUT
    max_shard_bytes: int = 150 * 2**20

    def validate(self):
        if self.num_speakers < 2:
            raise ValueError(
                f"num_speakers must be at least 2 (train and test), got {self.num_speakers}"
            )
        if self.clips_per_speaker < 1 or self.faces_per_speaker < 1:
            raise ValueError("clips_per_speaker and faces_per_speaker must be at least 1")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if round(self.test_fraction * self.num_speakers) >= self.num_speakers:  # split_speakers
            raise ValueError(f"test_fraction={self.test_fraction} of {self.num_speakers} "
                             "speakers leaves no speaker to train on; lower it or add speakers")
        if not 0.5 <= self.min_seconds <= self.max_seconds < float("inf"):
            raise ValueError(
                f"need 0.5 <= min_seconds <= max_seconds, both finite, got {self.min_seconds}, "
                f"{self.max_seconds}"
            )
        if self.records_layout not in records.LAYOUTS:
            raise ValueError(f"records_layout must be one of {records.LAYOUTS}, got "
                             f"{self.records_layout!r}")


def _rng(seed: int, *stream: int) -> np.random.Generator:
    """An independent generator per (seed, purpose, item): results do not depend on order."""
    return np.random.default_rng([seed, *stream])


def split_speakers(num_speakers: int, test_fraction: float, seed: int) -> Dict[str, List[int]]:
    """Speaker indices of each split, disjoint, a seeded permutation."""
    order = _rng(seed, 0).permutation(num_speakers)
    num_test = max(1, int(round(test_fraction * num_speakers)))
    return {"train": sorted(order[num_test:].tolist()), "test": sorted(order[:num_test].tolist())}


def _render_faces(speakers, config):
    images, landmarks = [], []
    for i, speaker in enumerate(speakers):
        for f in range(config.faces_per_speaker):
            image, marks = toy_face.render_face(
                speaker, _rng(config.seed, 2, i, f), size=records.FACE_SIZE
            )
            images.append(image)
            landmarks.append(marks)
    shape = (len(speakers), config.faces_per_speaker)
    return (
        np.stack(images).reshape(shape + images[0].shape),
        np.stack(landmarks).reshape(shape + landmarks[0].shape),
    )


def _synthesize_clips(speakers, config):
    """Returns per speaker a list of float32 waveforms of the drawn lengths."""
    clips = []
    for i, speaker in enumerate(speakers):
        row = []
        for c in range(config.clips_per_speaker):
            rng = _rng(config.seed, 3, i, c)
            seconds = rng.uniform(config.min_seconds, config.max_seconds)
            row.append(toy_voice.synthesize_clip(speaker, rng, seconds, audio.SAMPLE_RATE))
        clips.append(row)
    return clips


def _face_features(weights: str, images: np.ndarray) -> np.ndarray:
    """VGG-Face fc7 of every render: [speakers, faces_per_speaker, 4096]."""
    extractor = vggface.FaceFeatureExtractor(weights, batch_size=16, log_every=5)
    return extractor(images.reshape((-1,) + images.shape[2:])).reshape(
        images.shape[:2] + (vggface.FEATURE_DIM,))


class _Background(threading.Thread):
    """`fn(*args)` on a daemon thread; `result()` joins it and returns (or raises) its outcome."""

    def __init__(self, fn, *args):
        super().__init__(name="toy-voices", daemon=True)
        self._call, self._value, self._error = (fn, args), None, None
        self.start()

    def run(self):
        fn, args = self._call
        try:
            self._value = fn(*args)
        except BaseException as e:  # pylint: disable=broad-except  # re-raised by result()
            self._error = e

    def result(self):
        self.join()
        if self._error is not None:
            raise self._error
        return self._value


def _voices(speakers, config):
    """(clips per speaker, voice statistics [clips, ...] for the self-check, seconds taken)."""
    start = time.perf_counter()
    clips = _synthesize_clips(speakers, config)
    stats = np.stack([toy_voice_stats.voice_statistics(w, audio.SAMPLE_RATE)
                      for row in clips for w in row])
    return clips, stats, time.perf_counter() - start


def _spectrograms(waveforms: List[np.ndarray], batch_size: int = 32) -> np.ndarray:
    """First 6 s of each clip (tiled if shorter), through the TF front end in batches."""
    fn = tf.function(audio.spectrogram)
    out = []
    for start in range(0, len(waveforms), batch_size):
        batch = np.stack(
            [
                audio.fit_to_length(w, audio.SEGMENT_SAMPLES)
                for w in waveforms[start : start + batch_size]
            ]
        )
        out.append(fn(tf.constant(batch)).numpy())
    return np.concatenate(out)


def _self_check(speakers, splits, face_features, voice_stats, config):
    """Held-out linear-probe R² of every latent attribute from faces and from voices.

    Face probe: VGG-Face features of train speakers' faces -> their latents, scored on test
    speakers' faces. Voice probe: `voice_stats.voice_statistics` of train clips -> latents,
    scored on test clips. An attribute the voice carries should score well above 0 from voices;
    one it does not carry should sit near 0.
    """
    names = toy_speakers.ATTRIBUTE_NAMES
    carriers = {a.name: a.carried_by for a in toy_speakers.ATTRIBUTES}
    if min(len(splits["train"]), len(splits["test"])) < MIN_PROBE_SPEAKERS:
        return {
            "method": f"skipped: a probe needs at least {MIN_PROBE_SPEAKERS} speakers per split",
            "attributes": {
                n: {"carried_by": carriers[n], "r2_from_face": None, "r2_from_voice": None}
                for n in names
            },
        }
    latents = toy_speakers.latent_matrix(speakers, names)

    def rows(split, per_speaker):
        idx = np.array(splits[split])
        return (idx[:, None] * per_speaker + np.arange(per_speaker)).ravel(), np.repeat(
            idx, per_speaker
        )

    result = {}
    for what, x, per in (
        ("face", face_features, config.faces_per_speaker),
        ("voice", voice_stats, config.clips_per_speaker),
    ):
        train_rows, train_spk = rows("train", per)
        test_rows, test_spk = rows("test", per)
        r2 = probe.probe_r2(
            x[train_rows],
            latents[train_spk],
            x[test_rows],
            latents[test_spk],
            groups_train=train_spk,
        )
        result[what] = dict(zip(names, r2))
    return {
        "method": "ridge regression (strength by 5-fold cross-validation over speakers) fitted on train speakers, R^2 on "
        "held-out test speakers; face input: VGG-Face fc7 of the face crops; voice "
        "input: voice_stats.voice_statistics (" + ", ".join(toy_voice_stats.VOICE_STAT_NAMES) + ")",
        "attributes": {
            n: {
                "carried_by": carriers[n],
                "r2_from_face": round(float(result["face"][n]), 4),
                "r2_from_voice": round(float(result["voice"][n]), 4),
            }
            for n in names
        },
    }


def build_toy_world(config: ToyWorldConfig, output_dir: str) -> dataset_info.DatasetInfo:
    """Builds the toy world into `output_dir` (created; must be new or empty). A build that
    fails or is interrupted removes what it wrote, so the same command can be run again.

    Returns:
      The `dataset_info.DatasetInfo` written to `dataset_info.json`.
    """
    check_before_building(config, output_dir)
    created = not os.path.isdir(output_dir)
    claim_file = claim(output_dir)
    try:
        info = _build(config, output_dir)
    except BaseException:  # an error, Ctrl-C, a full disk: leave the directory as it was
        discard(output_dir, created)
        raise
    os.remove(claim_file)
    return info


def _build(config: ToyWorldConfig, output_dir: str) -> dataset_info.DatasetInfo:
    start = time.perf_counter()

    speakers = toy_speakers.sample_speakers(config.num_speakers, _rng(config.seed, 1))
    splits = split_speakers(config.num_speakers, config.test_fraction, config.seed)
    logging.info(
        "Toy world: %d speakers (%d train, %d test), seed %d.",
        len(speakers),
        len(splits["train"]),
        len(splits["test"]),
        config.seed,
    )

    weights = config.vggface_weights
    random_teacher = weights is None
    if random_teacher:
        weights = os.path.join(output_dir, f"vggface_random_seed{config.seed}.h5")
        logging.info("No VGG-Face weights given: writing seeded random weights to %s.", weights)
        vggface.random_vggface_weights(weights, seed=config.seed)

    t = time.perf_counter()
    images, landmarks = _render_faces(speakers, config)
    num_faces = images.shape[0] * images.shape[1]
    logging.info(
        "Rendered %d faces in %.1f s; computing VGG-Face features (~0.1 s per face on "
        "two cores)...",
        num_faces,
        time.perf_counter() - t,
    )
    # The voices are NumPy work, VGG-Face is TensorFlow's (which releases the GIL): synthesising
    # them on a thread while the face features run keeps both cores busy.
    # A daemon thread, so that an interrupted build exits without waiting for it.
    voices = _Background(_voices, speakers, config)
    t = time.perf_counter()
    features = _face_features(weights, images)
    logging.info("Face features: %.1f s.", time.perf_counter() - t)
    clips, voice_stats, voice_seconds = voices.result()
    logging.info("Synthesised %d clips and their voice statistics in %.1f s (beside the face "
                 "features).", sum(map(len, clips)), voice_seconds)

    t = time.perf_counter()
    flat_clips = [w for row in clips for w in row]
    stores_spectrogram = records.spectrogram_dtype_of(config.records_layout) is not None
    spectrograms = [None] * len(flat_clips)  # waveform_int16: its readers compute them
    if stores_spectrogram:
        spectrograms = _spectrograms(flat_clips)
        logging.info("Spectrograms of %d clips in %.1f s.", len(flat_clips),
                     time.perf_counter() - t)

    t = time.perf_counter()
    files, counts, num_bytes = {}, {}, {}
    for split, members in splits.items():
        with records.ShardedWriter(
            os.path.join(output_dir, split), config.max_shard_bytes, config.records_layout
        ) as writer:
            for i in members:
                jpegs = [media.encode_jpeg(image, JPEG_QUALITY) for image in images[i]]
                for c, waveform in enumerate(clips[i]):
                    f = c % config.faces_per_speaker
                    writer.write(
                        records.Example(
                            spectrogram=spectrograms[i * config.clips_per_speaker + c],
                            face_feature=features[i, f],
                            speaker_id=speakers[i].speaker_id,
                            clip_id=f"{speakers[i].speaker_id}-c{c:02d}",
                            source="toy",
                            face_jpeg=jpegs[f],
                            landmarks=landmarks[i, f],
                            waveform=audio.fit_to_length(
                                waveform, max(len(waveform), audio.SEGMENT_SAMPLES)
                            ),
                        )
                    )
        files[split] = [os.path.basename(p) for p in writer.paths]
        counts[split] = {
            "speakers": len(members),
            "clips": writer.num_examples,
            "faces": len(members) * config.faces_per_speaker,
        }
        num_bytes[split] = writer.num_bytes
    logging.info("Wrote records in %.1f s.", time.perf_counter() - t)

    lengths = np.array([len(w) for w in flat_clips]) / audio.SAMPLE_RATE
    info = dataset_info.DatasetInfo(
        name="speech2face toy world",
        builder="toy_world",
        config=dataclasses.asdict(config),
        counts=counts,
        layout=config.records_layout,
        spectrogram={
            "dtype": records.spectrogram_dtype_of(config.records_layout) or "float32",
            "shape": [audio.num_frames(audio.SEGMENT_SAMPLES), audio.NUM_FREQ_BINS, 2],
            "content": "first 6 s of the clip, tiled if shorter (docs/data.md)",
            "stored": stores_spectrogram,
        },
        vggface_weights={
            "path": os.path.basename(weights) if random_teacher else os.path.abspath(weights),
            "random_init": random_teacher,
            "note": (
                "seeded He-normal random VGG-Face weights in the rcmalli layout: no "
                "pretrained weights are available here; the face features are those of a "
                "random network"
                if random_teacher
                else "user-supplied weights"
            ),
        },
        files=files,
        bytes=num_bytes,
        details={
            "seed": config.seed,
            "clip_seconds": {
                "min": round(float(lengths.min()), 3),
                "max": round(float(lengths.max()), 3),
                "mean": round(float(lengths.mean()), 3),
                "shorter_than_6s": int((lengths < audio.SEGMENT_SECONDS).sum()),
            },
            "attributes": [dataclasses.asdict(a) for a in toy_speakers.ATTRIBUTES],
            "self_check": _self_check(
                speakers, splits, features.reshape(-1, vggface.FEATURE_DIM), voice_stats, config
            ),
        },
    )
    info.build_seconds = round(time.perf_counter() - start, 1)
    with open(os.path.join(output_dir, SPEAKERS_FILE), "w") as f:
        split_of = {i: s for s, members in splits.items() for i in members}
        json.dump(
            [
                {"speaker_id": s.speaker_id, "split": split_of[i], "latents": s.latents}
                for i, s in enumerate(speakers)
            ],
            f,
            indent=1,
        )
    info.write(output_dir)
    logging.info("Toy world built in %.1f s: %s.", info.build_seconds, output_dir)
    return info


def format_summary(info: dataset_info.DatasetInfo) -> str:
    """A human-readable summary of `dataset_info.json`: sizes, clip lengths, self-check."""
    counts, secs = info.counts, info.details["clip_seconds"]
    total_bytes = sum(info.bytes.values())
    lines = [
        f"Toy world (seed {info.details['seed']}, schema v{info.schema_version}):",
        f"  speakers  {counts['train']['speakers'] + counts['test']['speakers']:>6}  "
        f"(train {counts['train']['speakers']}, test {counts['test']['speakers']}; disjoint)",
        f"  clips     {counts['train']['clips'] + counts['test']['clips']:>6}  "
        f"(train {counts['train']['clips']}, test {counts['test']['clips']})",
        f"  faces     {counts['train']['faces'] + counts['test']['faces']:>6}",
        f"  clip length {secs['min']:.1f}-{secs['max']:.1f} s, mean {secs['mean']:.1f} s; "
        f"{secs['shorter_than_6s']} clips shorter than 6 s (tiled)",
        f"  records   {total_bytes / 2**20:.0f} MiB in "
        f"{sum(len(v) for v in info.files.values())} files "
        f"({info.layout})",
        f"  VGG-Face  {info.vggface_weights['path']}"
        f"{' (seeded random weights)' if info.vggface_weights['random_init'] else ''}",
        "  self-check: held-out linear-probe R^2 of each latent attribute",
        f"    {'attribute':<14} {'carried by':<10} {'from face':>9} {'from voice':>10}",
    ]
    for name, row in info.details["self_check"]["attributes"].items():
        face, voice = (
            "-" if v is None else f"{v:.2f}" for v in (row["r2_from_face"], row["r2_from_voice"])
        )
        lines.append(f"    {name:<14} {row['carried_by']:<10} {face:>9} {voice:>10}")
    if info.build_seconds:
        lines.append(f"  built in {info.build_seconds:.0f} s")
    return "\n".join(lines)
