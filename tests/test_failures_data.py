"""Hostile input to the data tools (docs/failures.md, "Data tools"): every user-caused error is
one line and a non-zero exit, checked before anything is written; repeated manifest rows are
built once; an empty build leaves the output directory as it was; the local runner's ports
listen on localhost only."""

import glob
import os
import signal
import subprocess
import sys

import apache_beam as beam
from apache_beam.testing import util as beam_util
import pytest

from speech2face.cli import flags as cli_flags
from speech2face.datasets.real import build, manifests, rows, runners
from speech2face.datasets.real.manifests import Reason
from tests.support import fake_media, helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(tmp_path, **kwargs):
    base = dict(manifest=str(tmp_path / "m.csv"), manifest_format="avspeech",
                media_dir=str(tmp_path), output_dir=str(tmp_path / "out"), vggface_weights=None,
                random_weights_for_tests=True)
    return build.BuildConfig(**{**base, **kwargs})


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"),
    (b"\n\n  \n", "is empty"),
    (b"\x00\xff\xfe garbage\n", "not UTF-8"),
    (b"abc,0,3,0.5,0.5\x00\x00\n", "binary file"),
])
def test_bad_manifest_files_are_refused_before_any_write(tmp_path, content, message):
    (tmp_path / "m.csv").write_bytes(content)
    with pytest.raises(ValueError, match=message):
        build.build_records(_config(tmp_path))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"manifest": "DIR"}, "is a directory"),
    ({"upsample": 9}, "upsample must be in"),
    ({"tf_threads": -1}, "tf_threads must be >= 0"),
    ({"min_face_size": 0}, "min_face_size"),
    ({"max_seconds": float("inf")}, "finite"),
    ({"test_manifest": "SAME"}, "same file"),
    ({"output_dir": "FILE"}, "is a file"),
])
def test_bad_settings_are_refused_before_any_write(tmp_path, kwargs, message):
    (tmp_path / "m.csv").write_text("abc,0,3,0.5,0.5\n")
    (tmp_path / "file").write_text("x")
    swap = {"DIR": str(tmp_path), "SAME": str(tmp_path / "m.csv"), "FILE": str(tmp_path / "file")}
    kwargs = {k: swap.get(v, v) if isinstance(v, str) else v for k, v in kwargs.items()}
    with pytest.raises((ValueError, OSError), match=message):
        build.build_records(_config(tmp_path, **kwargs))
    assert not (tmp_path / "out").exists()


def test_bad_beam_options_are_one_message():
    with pytest.raises(ValueError, match="invalid choice: 'bogus'"):
        runners.pipeline_options(["--direct_running_mode=bogus"])
    with pytest.raises(ValueError, match="must be >= 1"):
        runners.pipeline_options(["--direct_num_workers=0"])


def test_repeated_rows_are_built_once_and_test_wins(tmp_path):
    train = tmp_path / "train.csv"
    test = tmp_path / "test.csv"
    train.write_bytes(b"a,0,3,0.5,0.5\na,0,3,0.5,0.5\na,0.0,3.0,0.2,0.5\nb,0,3,0.5,0.5\n"
                      b"c,0,3,0.5,0.5\n\xff\xfe,0,3,0.5,0.5\n")
    test.write_text("c,0,3,0.5,0.5\n")
    for config, want_clips, want_rejects in (
            (_config(tmp_path, manifest=str(train)),
             [("a_0.000_3.000", None), ("b_0.000_3.000", None), ("c_0.000_3.000", None)],
             [Reason.DUPLICATE_ROW] * 2 + [Reason.MALFORMED_ROW]),
            (_config(tmp_path, manifest=str(train), test_manifest=str(test)),
             [("a_0.000_3.000", "train"), ("b_0.000_3.000", "train"),
              ("c_0.000_3.000", "test")],
             [Reason.DUPLICATE_ROW] * 3 + [Reason.MALFORMED_ROW])):
        with beam.Pipeline(options=runners.pipeline_options(
                ["--direct_running_mode=in_memory", "--direct_num_workers=1"])) as pipeline:
            clips, rejects = rows.parse_items(pipeline, config)
            beam_util.assert_that(clips | beam.Map(lambda c: (c.clip_id, c.split)),
                                  beam_util.equal_to(want_clips), label="Clips")
            beam_util.assert_that(rejects | "AllRejects" >> beam.Flatten()
                                  | beam.Map(lambda r: r.reason),
                                  beam_util.equal_to(want_rejects), label="Rejects")
    assert Reason.DUPLICATE_ROW in manifests.REASONS


def test_local_runner_ports_listen_on_localhost_only():
    from apache_beam.runners.portability.fn_api_runner import worker_handlers
    options = runners.pipeline_options(["--direct_num_workers=1"])
    with runners.local_ports_on_loopback(options):
        server = worker_handlers.GrpcServer(worker_handlers.StateServicer(), None, None)
    plain = worker_handlers.GrpcServer(worker_handlers.StateServicer(), None, None)
    try:
        ports = {server.control_port, server.data_port, server.state_port, server.logging_port}
        listening = _listening_addresses(ports | {plain.control_port})
        assert set(listening) == ports | {plain.control_port}
        for port in ports:
            assert all(_is_loopback(a) for a in listening[port]), (port, listening[port])
        # Beam's own binding, outside the block: every interface (what the block prevents).
        assert not all(_is_loopback(a) for a in listening[plain.control_port])
    finally:
        server.close()
        plain.close()
    assert worker_handlers.grpc.__name__ == "grpc"  # the patch ends with the block


def _listening_addresses(ports):
    """{port: {local addresses}} of the TCP sockets in LISTEN state on `ports` (/proc/net)."""
    import ipaddress
    out = {}
    for name in ("tcp", "tcp6"):
        path = f"/proc/net/{name}"
        if not os.path.exists(path):
            continue
        with open(path) as f:
            next(f)
            for line in f:
                local, state = line.split()[1], line.split()[3]
                address, port = local.split(":")
                if state != "0A" or int(port, 16) not in ports:
                    continue
                raw = bytes.fromhex(address)
                # /proc prints each 32-bit word in host (little-endian) order.
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                out.setdefault(int(port, 16), set()).add(ipaddress.ip_address(raw))
    return out


def _is_loopback(ip):
    return (getattr(ip, "ipv4_mapped", None) or ip).is_loopback


def _run(module, *args):
    proc = subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stderr.splitlines()
             if "cudart_stub" not in line and "absl::InitializeLog" not in line
             and "cuInit" not in line]
    return proc, lines


@pytest.mark.slow
def test_build_records_cli_errors_are_one_line(tmp_path):
    (tmp_path / "m.csv").write_text("missing,0,3,0.5,0.5\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    common = [f"--manifest={tmp_path / 'm.csv'}", "--manifest_format=avspeech",
              f"--media_dir={tmp_path}", "--allow_random_weights_for_tests"]
    for extra, message in (
            ([f"--output_dir={tmp_path / 'out'}"], "is not empty"),
            ([f"--output_dir={tmp_path / 'm.csv'}"], "is a file"),
            ([f"--output_dir={tmp_path / 'new'}", "--direct_running_mode=bogus"],
             "invalid choice"),
            ([f"--output_dir={tmp_path / 'new'}", "--test_fraction=2"], "test_fraction"),
            # A bad value of a flag absl knows (the rest go to Beam): one line, no traceback.
            ([f"--output_dir={tmp_path / 'new'}", "--num_workers=0"], "not a positive integer"),
            # An empty --output_dir would build into the working directory.
            (["--output_dir="], "--output_dir is required"),
            # Every row rejected: non-zero, and the old contents stay as they were.
            ([f"--output_dir={tmp_path / 'out'}", "--overwrite",
              "--direct_running_mode=in_memory", "--direct_num_workers=1"],
             "no example written: all 1 items")):
        proc, lines = _run("data_prep.build_records", *common, *extra)
        assert proc.returncode == 1, proc.stderr[-2000:]
        assert len(lines) == 1 and lines[0].startswith("build_records.py: error: "), lines
        assert message in lines[0]
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "new").exists()
    assert [e for e in os.listdir(tmp_path / "out") if not e.startswith(".build-")] == [
        "notes.txt"]


def test_ctrl_c_is_one_line_and_status_130():
    """Every tool runs under `run_main`: Ctrl-C during its work (predict.py mid-batch,
    build_records mid-pipeline) ends in one line, not a KeyboardInterrupt traceback."""
    code = ("import sys; from speech2face.cli import flags\n"
            "def main(argv):\n    raise KeyboardInterrupt\n"
            "sys.argv = ['tool']; flags.run_main('tool', 'A tool.', main)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 130 and proc.stderr.strip() == "tool: interrupted", proc.stderr


def test_sigterm_is_one_line_and_status_143():
    """SIGTERM raises `Terminated` in the tool's main thread, a KeyboardInterrupt: the cleanups
    of Ctrl-C run (the `finally` here), then one line and 128 + SIGTERM. A second SIGTERM
    during the cleanup does not cut it short."""
    code = ("import os, signal, sys\nfrom speech2face.cli import flags\n"
            "def main(argv):\n    try:\n        os.kill(os.getpid(), signal.SIGTERM)\n"
            "        signal.pause()\n"
            "    finally:\n        os.kill(os.getpid(), signal.SIGTERM)\n"
            "        print('cleaned up', file=sys.stderr)\n"
            "sys.argv = ['tool']; flags.run_main('tool', 'A tool.', main)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr.splitlines() == ["cleaned up", "tool: stopped by SIGTERM"], proc.stderr


def _running(pid):
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["in_memory", "multi_processing"])
def test_sigterm_stops_build_records_and_removes_its_build(tmp_path, tiny_weights, mode):
    """SIGTERM mid-pipeline: the `.build-<id>/` folder (and the output directory it made) is
    removed as after Ctrl-C, the Beam workers end with it, and the tool says so in one line,
    exit 143; nothing is left to block a rerun."""
    (tmp_path / "voices").mkdir()
    for i in range(4):
        helpers.write_wav(tmp_path / "voices" / f"v{i}.wav", fake_media.voice(3.0, i))
    fake_media.write_image(tmp_path / "face.png", fake_media.face_frame())
    (tmp_path / "pairs.csv").write_text("".join(f"voices/v{i}.wav,face.png,s{i}\n"
                                                for i in range(4)))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "data_prep.build_records", f"--manifest={tmp_path / 'pairs.csv'}",
           "--manifest_format=pairs", f"--media_dir={tmp_path}", f"--output_dir={out}",
           f"--vggface_weights={tiny_weights}", "--test_fraction=0", "--detector=hog",
           f"--direct_running_mode={mode}", "--direct_num_workers=2" if mode != "in_memory"
           else "--direct_num_workers=1"]
    workers = []

    def ready(pid):  # the build has started (and, with multi_processing, its workers)
        workers[:] = cli_flags.descendants(pid)
        return bool(glob.glob(str(out / ".build-*"))) and (mode == "in_memory" or bool(workers))

    status, stderr = helpers.stop_with_sigterm(cmd, ready, cwd=REPO)
    assert status == 128 + signal.SIGTERM, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == "build_records.py: stopped by SIGTERM", stderr
    assert not out.exists() and "Traceback" not in stderr, stderr
    if mode == "multi_processing":  # SIGTERM reached them too (else Beam waits for them)
        assert workers and not [w for w in workers if _running(w)]


def test_the_tools_import_tensorflow_without_its_info_lines(tmp_path):
    """TensorFlow logs INFO lines through Abseil while it loads (oneDNN, CUDA drivers), whatever
    TF_CPP_MIN_LOG_LEVEL says; every tool imports it through `cli.import_tensorflow`, which drops
    them and keeps the rest of what is written to stderr."""
    code = ("import sys\n"
            "from speech2face import cli\n"
            "cli.import_tensorflow()\n"
            "import tensorflow as tf\n"
            "print(tf.constant(2) + 3, file=sys.stdout)\n"
            "print('the only line', file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={k: v for k, v in os.environ.items()
                                            if k != "TF_CPP_MIN_LOG_LEVEL"})
    assert proc.returncode == 0, proc.stderr
    assert "5" in proc.stdout
    assert proc.stderr.splitlines() == ["the only line"], proc.stderr


def test_a_usage_error_is_one_line_not_the_whole_usage(tmp_path):
    """absl prints a tool's whole usage above a UsageError, and two lines for a flag it cannot
    parse; the tools' entry point gives one line."""
    for args, message in (
            (["train.py", "--stage=decoder", "--train_records=x", f"--model_dir={tmp_path}/r",
              "--learning_rate=0.1"], "--learning_rate belong(s) to the other stage"),
            (["predict.py", "--audio=x.wav"], "give --model=MODEL"),
            # A flag absl cannot parse: two lines of its own ("FATAL Flags parsing error").
            (["predict.py", "--bogus=1"], "Unknown command line flag 'bogus'"),
            (["train.py", "--train_steps=abc"], "flag --train_steps=abc")):
        proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True,
                              text=True, timeout=120)
        prog = args[0]
        assert proc.returncode == 1
        assert proc.stderr.splitlines() == [proc.stderr.splitlines()[-1]], proc.stderr[-2000:]
        assert proc.stderr.startswith(f"{prog}: error: ") and message in proc.stderr
