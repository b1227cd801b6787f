r"""Fetches only the AVSpeech segments a manifest names, ready for build_records (docs/data.md).

    python -m data_prep.download --manifest=avspeech_train.csv --manifest_format=avspeech \
        --output_dir=/data/avspeech/segments [--workers=4] [--max_height=480] [--rate_limit=2]

    python -m data_prep.build_records --manifest=/data/avspeech/segments/segments.csv \
        --manifest_format=avspeech --media_dir=/data/avspeech/segments --output_dir=... \
        --vggface_weights=...

Per video yt-dlp (pip install 'speech2face[download]') resolves a format of at most
--max_height lines with audio, and ffmpeg reads only each row's segment (plus --margin_seconds)
from it: `<output_dir>/<youtube_id>_<start>_<end>.mp4`, one per row, listed in `segments.csv`
(times relative to each cut, the face hint kept, the YouTube id still the speaker).
`failures.jsonl` lists every row that failed, with its reason. A rerun fetches nothing that is
done and skips what failed for good (--retry_failed retries it). --url_template points the same
code at any server. You are responsible for following the terms of the platform the videos come
from; AVSpeech itself distributes only ids and times.

VoxCeleb2 cannot be fetched anonymously: request access, download it, then check your copy and
write the manifest the builder reads:

    python -m data_prep.download --manifest_format=voxceleb2 --verify \
        --media_dir=/data/vox2/dev/mp4 --output_dir=/data/vox2/checked
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from speech2face.cli import flags as config_flags  # noqa: E402
from speech2face.datasets.real import download, voxceleb_verify  # noqa: E402

flags.DEFINE_string("manifest", None, "The AVSpeech CSV (`youtube_id, start, end, x, y` rows).")
flags.DEFINE_string("output_dir", None, "Where the cuts, segments.csv and failures.jsonl go (with "
                    "--verify: voxceleb2.txt, speakers.csv and failures.jsonl).")
_FIELDS = config_flags.define_from(download.DownloadConfig, skip=("manifest", "output_dir"))
flags.DEFINE_enum("manifest_format", "avspeech", ["avspeech", "voxceleb2"],
                  "avspeech: fetch the manifest's segments; voxceleb2: with --verify, check a "
                  "downloaded tree.")
flags.DEFINE_bool("verify", False, "Check the VoxCeleb2 tree at --media_dir and write its "
                  "manifest (voxceleb2.txt), speakers.csv and failures.jsonl to --output_dir.")
flags.DEFINE_string("media_dir", None, "With --verify: the VoxCeleb2 tree "
                    "<speaker>/<video>/<utt>.mp4 (e.g. vox2/dev/mp4).")
FLAGS = flags.FLAGS


def main(argv):
    config_flags.check_usage(argv, required=("output_dir",))
    if FLAGS.manifest_format == "voxceleb2":
        if not FLAGS.verify:
            raise app.UsageError(
                "VoxCeleb2 cannot be downloaded anonymously: request access at "
                "https://www.robots.ox.ac.uk/~vgg/data/voxceleb/vox2.html, download it, then "
                "check it with --verify --media_dir=.../dev/mp4")
        given = [f"--{f}" for f in config_flags.given(_FIELDS) if f != "workers"]
        given += ["--manifest"] if FLAGS.manifest else []
        if given:
            raise app.UsageError(f"{', '.join(given)} belong(s) to the AVSpeech download, not "
                                 "to --verify")
        config_flags.check_usage(argv, required=("media_dir",))
        try:
            summary = voxceleb_verify.verify(FLAGS.media_dir, FLAGS.output_dir,
                                             FLAGS.workers or download.DownloadConfig.workers)
        except (ValueError, FileNotFoundError, FileExistsError) as e:
            config_flags.fail(e)
    else:
        if FLAGS.verify or FLAGS.media_dir:
            raise app.UsageError("--verify and --media_dir check a VoxCeleb2 tree: give "
                                 "--manifest_format=voxceleb2 with them")
        config_flags.check_usage(argv, required=("manifest",))
        config = download.DownloadConfig(FLAGS.manifest, FLAGS.output_dir,
                                         **config_flags.kwargs_given(_FIELDS))
        try:
            summary = download.download(config)
        except (ValueError, FileNotFoundError, FileExistsError, ImportError) as e:
            config_flags.fail(e)
    print(summary.format())


def run():
    """Console-script entry point (absl parses the flags and prints this module's help)."""
    config_flags.run_main(__name__, __doc__, main)


if __name__ == "__main__":
    run()
