r"""Builds TFRecords from real data (AVSpeech, VoxCeleb2, or a pairs CSV) with Apache Beam.

    python -m data_prep.build_records --manifest=avspeech_train.csv --manifest_format=avspeech \
        --media_dir=/data/avspeech/videos --output_dir=/data/records \
        --vggface_weights=/data/rcmalli_vggface_tf_vgg16.h5 [--runner=...] [beam options]

    python -m data_prep.build_records --manifest_format=voxceleb2 \
        --media_dir=/data/voxceleb2/dev/mp4 --output_dir=... --vggface_weights=...

Writes `{train,test}-*.tfrecord` shards (~150 MB, the `speech2face.records` schema, split by
speaker), `rejects.jsonl` (every skipped item with its reason) and `dataset_info.json` (counts per
split, source and reject reason; schema version; weights hash; this command line).

Without --runner the DirectRunner runs on this machine with one process per core
(`--direct_num_workers=N` and `--direct_running_mode=in_memory|multi_threading|multi_processing`
change that). Any other Beam runner takes its usual options, passed through unchanged, e.g.
`--runner=DataflowRunner --project=P --region=R --temp_location=gs://... --setup_file=./setup.py`
or `--runner=FlinkRunner --flink_master=host:8081`; see docs/data.md.
"""

import logging as std_logging
import os
import shlex
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

from data_prep import build_records_lib, dataset_files, faces, manifests, runners  # noqa: E402
from speech2face import records  # noqa: E402
from speech2face.models import vggface  # noqa: E402

_D = build_records_lib.BuildConfig(None, "avspeech", "", "", None)

flags.DEFINE_string("manifest", None, "Manifest file (optional for voxceleb2: the tree is listed).")
flags.DEFINE_enum("manifest_format", None, list(manifests.FORMATS), "Format of the manifest.")
flags.DEFINE_string("media_dir", None, "Directory the manifest's media paths are relative to.")
flags.DEFINE_string("output_dir", None, "Directory for the records (must be empty).")
flags.DEFINE_string("vggface_weights", None,
                    "rcmalli_vggface_tf_vgg16.h5 (required; download it yourself from "
                    f"{vggface.WEIGHTS_URLS['rcmalli_vggface_tf_vgg16.h5']}).")
flags.DEFINE_bool("allow_random_weights_for_tests", False,
                  "FOR TESTS ONLY: without --vggface_weights, use seeded random VGG-Face weights "
                  "(written to output_dir); dataset_info.json then says the features are random.")
flags.DEFINE_bool("overwrite", False, "Replace a previous build in output_dir.")
flags.DEFINE_float("test_fraction", _D.test_fraction,
                   "Share of speakers (by a stable hash of the speaker id) in the test split.")
flags.DEFINE_enum("detector", _D.detector, list(faces.DETECTORS),
                  "dlib face detector: cnn (MMOD, the paper's) or hog (~50x faster on CPU).")
flags.DEFINE_integer("upsample", _D.upsample, "dlib detector upsampling (finds smaller faces, "
                     "~4x the time each).")
flags.DEFINE_integer("max_detect_side", _D.max_detect_side,
                     "Frames are downscaled to this longer side for detection.")
flags.DEFINE_integer("min_face_size", _D.min_face_size, "Smallest face kept, frame pixels.")
flags.DEFINE_integer("face_tries", _D.face_tries,
                     "Frames tried around the segment's middle (0.5 s apart) before no_face.")
flags.DEFINE_float("min_seconds", _D.min_seconds, "Shorter clips are rejected (too_short).")
flags.DEFINE_float("max_seconds", _D.max_seconds, "Longer clips keep their first max_seconds.")
flags.DEFINE_enum("spectrogram_dtype", _D.spectrogram_dtype, list(records.SPECTROGRAM_DTYPES),
                  "Storage dtype of the spectrograms.")
flags.DEFINE_bool("store_waveform", _D.store_waveform,
                  "Also store the int16 waveform (needed for random-crop training).")
flags.DEFINE_integer("vgg_batch_size", _D.vgg_batch_size, "Faces per VGG-Face forward pass.")
flags.DEFINE_integer("shard_mb", _D.target_shard_bytes // 2**20, "Target shard size, MiB.")
flags.DEFINE_integer("num_workers", None, "DirectRunner workers (default: the CPU cores).")
flags.DEFINE_integer("tf_threads", None,
                     "TensorFlow threads per worker for VGG-Face (default: cores / workers on the "
                     "DirectRunner, TF's own default elsewhere; use 1 on Dataflow).")
flags.mark_flags_as_required(["manifest_format", "media_dir", "output_dir"])
FLAGS = flags.FLAGS


def main(argv):
    # Whatever absl does not know goes to Beam (argv[0] is the program).
    beam_args = argv[1:]
    # Beam relays every worker's INFO lines (gRPC channels, bundle statistics): they would bury
    # the build's own messages. --verbosity=1 brings them back.
    if FLAGS.verbosity < 1:
        std_logging.getLogger("apache_beam").setLevel(std_logging.WARNING)
    if FLAGS.vggface_weights and FLAGS.allow_random_weights_for_tests:
        raise app.UsageError("give --vggface_weights or --allow_random_weights_for_tests, not both")
    config = build_records_lib.BuildConfig(
        manifest=FLAGS.manifest,
        manifest_format=FLAGS.manifest_format,
        media_dir=FLAGS.media_dir,
        output_dir=FLAGS.output_dir,
        vggface_weights=FLAGS.vggface_weights,
        random_weights_for_tests=FLAGS.allow_random_weights_for_tests,
        test_fraction=FLAGS.test_fraction,
        detector=FLAGS.detector,
        upsample=FLAGS.upsample,
        max_detect_side=FLAGS.max_detect_side,
        min_face_size=FLAGS.min_face_size,
        face_tries=FLAGS.face_tries,
        min_seconds=FLAGS.min_seconds,
        max_seconds=FLAGS.max_seconds,
        spectrogram_dtype=FLAGS.spectrogram_dtype,
        store_waveform=FLAGS.store_waveform,
        vgg_batch_size=FLAGS.vgg_batch_size,
        tf_threads=FLAGS.tf_threads,
        target_shard_bytes=FLAGS.shard_mb * 2**20,
        overwrite=FLAGS.overwrite,
        command_line=shlex.join([sys.executable, "-m", "data_prep.build_records", *sys.argv[1:]]),
    )
    try:
        options = runners.pipeline_options(beam_args, FLAGS.num_workers)
        info = build_records_lib.build_records(config, options).info
    except (ValueError, FileExistsError, FileNotFoundError) as e:
        # WeightsFileError is a ValueError: one line naming the file and what to do.
        raise app.UsageError(str(e)) from e
    logging.info("Done: %s", FLAGS.output_dir)
    print(dataset_files.format_summary(info))


def _parse_flags(argv):
    # Unknown flags are Beam pipeline options; absl must leave them in argv instead of failing.
    return flags.FLAGS(argv, known_only=True)


def run():
    """Console-script entry point (absl parses the flags and prints this module's help)."""
    sys.modules["__main__"].__doc__ = __doc__
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
