r"""Serves a web page to try a trained Speech2Face model on your own voice.

    python -m speech2face.app --model=MODEL [--port=8000] [--host=127.0.0.1]
    speech2face-app --model=demo_out/model

Then open http://127.0.0.1:8000/ : record from the microphone or upload an audio/video file and
see the predicted face; the exaggeration slider (0 to 1.4) re-renders it. Browsers allow the
microphone only on localhost or over https: from another machine use an ssh tunnel
(ssh -L 8000:127.0.0.1:8000 HOST) rather than --host=0.0.0.0. POST /predict takes a multipart
field `audio` (and `exaggeration`) and returns the PNG:

    curl -F audio=@clip.wav 'http://127.0.0.1:8000/predict?exaggeration=0.7' -o face.png

--model is a model directory (speech2face-export-model, or the demo's WORKDIR/model). Needs the
optional packages: pip install -e ".[app]". docs/app.md.
"""

import ipaddress

from speech2face import cli  # noqa: E402

cli.import_tensorflow()  # first: without its INFO lines

from absl import app, flags  # noqa: E402

from speech2face.cli import flags as config_flags  # noqa: E402

flags.DEFINE_string("model", None, "A model directory (model.json; written by "
                    "speech2face-export-model or the demo).")
flags.DEFINE_string("host", "127.0.0.1", "Address to listen on. The microphone works only on "
                    "localhost or https, so keep the default and tunnel to it.")
flags.DEFINE_integer("port", 8000, "Port to listen on.", lower_bound=1, upper_bound=65535)
flags.DEFINE_float("max_upload_mb", 50.0, "Largest upload accepted, in MB (2**20 bytes); bigger "
                   "ones get 413.", lower_bound=0.001)
flags.DEFINE_integer("image_size", 256, "Side of the returned face PNG in pixels.",
                     lower_bound=16, upper_bound=2048)
FLAGS = flags.FLAGS


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv):
    config_flags.check_usage(argv)
    if not FLAGS.model:
        raise app.UsageError("give --model=MODEL (a model directory)")
    try:
        import uvicorn  # pylint: disable=import-outside-toplevel

        from speech2face.app import server  # pylint: disable=import-outside-toplevel
    except ImportError as e:
        config_flags.fail(f"{e}; install the app's packages: pip install -e \".[app]\"")
    import speech2face  # pylint: disable=import-outside-toplevel

    try:
        model = speech2face.load_model(FLAGS.model)
    except (FileNotFoundError, ValueError) as e:
        config_flags.fail(e)
    application = server.create_app(model, max_upload_bytes=int(FLAGS.max_upload_mb * 2**20),
                                     image_size=FLAGS.image_size)
    host = f"[{FLAGS.host}]" if ":" in FLAGS.host else FLAGS.host
    print(f"{config_flags.prog()}: serving {FLAGS.model} on http://{host}:{FLAGS.port}/", flush=True)
    if not _is_loopback(FLAGS.host):
        print(f"{config_flags.prog()}: note: browsers allow the microphone only on localhost or "
              "https; on this address only uploads will work (tunnel to 127.0.0.1 instead)",
              flush=True)
    uvicorn.run(application, host=FLAGS.host, port=FLAGS.port, log_level="info")


def run():
    """Console-script entry point (absl parses the flags and prints this module's help)."""
    config_flags.run_main(__name__, __doc__, main)


if __name__ == "__main__":
    run()
