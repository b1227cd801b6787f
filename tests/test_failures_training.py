"""Failure semantics of training and its inputs (docs/failures.md): corrupt shards are found
and named, the verify tool, the model_dir lock, the checks before anything is written, the
refused resume with other settings, and the one-line errors of the command-line tools."""

import collections
import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from speech2face import data, errors
from speech2face.cli import flags as config_flags
from speech2face.models import export
from speech2face.records import verify
from speech2face.training import config, run_dir
from tests.support import fake_records

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def shards(tmp_path):
    """(good file, truncated, payload-corrupt, garbage, empty) record files."""
    (tmp_path / "src").mkdir()
    pattern, _ = fake_records.write_record_files(str(tmp_path / "src"), 1, 4)
    good = data.list_files(pattern)[0]
    content = open(good, "rb").read()
    files = {}
    for name, body in (("trunc", content[:len(content) // 2]), ("garbage", b"not a record" * 9),
                       ("empty", b"")):
        files[name] = str(tmp_path / f"{name}.tfrecord")
        open(files[name], "wb").write(body)
    flipped = bytearray(content)
    flipped[len(content) // 3] ^= 0xFF
    files["flip"] = str(tmp_path / "flip.tfrecord")
    open(files["flip"], "wb").write(bytes(flipped))
    files["good"] = good
    return files


def test_masked_crc32c_matches_tensorflow_headers(shards):
    header = open(shards["good"], "rb").read(12)
    assert verify.masked_crc32c(header[:8]) == int.from_bytes(header[8:], "little")


def test_cheap_check_names_empty_and_non_tfrecord_files(shards):
    assert verify.first_record_problem(shards["good"]) is None
    assert "empty" in verify.first_record_problem(shards["empty"])
    assert "not a TFRecord" in verify.first_record_problem(shards["garbage"])
    assert "truncated" not in (verify.first_record_problem(shards["trunc"]) or "")
    with pytest.raises(verify.CorruptRecordsError, match="2 of 3 training files") as e:
        verify.check_files([shards["good"], shards["empty"], shards["garbage"]], "training")
    assert shards["empty"] in str(e.value) and shards["garbage"] in str(e.value)
    assert isinstance(e.value, errors.UserError)


def test_verify_file_finds_the_bad_record_and_its_offset(shards):
    good = verify.verify_file(shards["good"])
    assert good.problem is None and good.records == 4
    trunc = verify.verify_file(shards["trunc"])
    assert 0 < trunc.records < 4 and "truncated record" in trunc.problem
    flip = verify.verify_file(shards["flip"])
    bad = max(i for i, offset in enumerate(good.offsets) if offset <= len(
        open(shards["good"], "rb").read()) // 3)
    assert flip.records == bad
    assert f"record {bad} at byte {good.offsets[bad]}: corrupt data" in flip.problem


def test_a_file_cut_inside_a_record_header_is_not_a_clean_end(shards):
    """TensorFlow's reader takes a file that ends inside a record header for a clean end; the
    input pipeline and the evaluation's reader check each file to its last byte."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    content = open(shards["good"], "rb").read()
    offsets = verify.walk(shards["good"]).offsets
    # The reader alone: two whole records, then silence where the third one's header breaks.
    assert sum(1 for _ in tf.data.TFRecordDataset(shards["trunc"])) == 2
    assert offsets[2] < len(content) // 2 < offsets[2] + 12  # the fixture's cut: in a header
    files = [shards["good"], shards["trunc"]]
    for reading in (lambda: data.input_fn(",".join(files), None, 1, False),
                    lambda: data.input_fn(",".join(files), None, 2, True).take(50),
                    lambda: data.read_files(files)):
        with pytest.raises(tf.errors.OpError) as caught:
            for _ in reading():
                pass
        assert verify.is_corrupt_read(caught.value) and shards["trunc"] in str(caught.value)
        error = verify.corrupt_error(files, caught.value, "training")
        assert shards["trunc"] in str(error) and "truncated" in str(error)
    # Whole files read as before, and --skip_corrupt_records reads the good part and goes on.
    assert sum(1 for _ in data.read_files([shards["good"]])) == 4
    assert sum(1 for _ in data.read_files(files, skip_corrupt=True)) == 4 + 2


def test_data_loss_is_mapped_to_the_file(shards):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    files = [shards["good"], shards["flip"]]
    with pytest.raises(tf.errors.DataLossError) as caught:
        for _ in data.input_fn(",".join(files), None, 1, False):
            pass
    error = verify.corrupt_error(files, caught.value, "training")
    assert shards["flip"] in str(error) and "--skip_corrupt_records" in str(error)


def test_skip_corrupt_reads_the_records_before_the_bad_one(shards):
    files = ",".join([shards["good"], shards["trunc"], shards["flip"]])
    options = data.InputOptions(skip_corrupt=True)
    readable = sum(verify.verify_file(shards[k]).records for k in ("good", "trunc", "flip"))
    assert readable < 12
    assert sum(int(b["face_feature"].shape[0]) for b in data.input_fn(files, None, 1, False,
                                                                       options)) == readable
    # Each reading of a file that ends before its last byte is counted (the training loop
    # logs the count and writes it to its summaries).
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    cut_short = tf.Variable(0, dtype=tf.int64, trainable=False)
    counted = data.InputOptions(skip_corrupt=True, cut_short=cut_short)
    for _ in data.input_fn(files, None, 2, False, counted):
        pass
    assert int(cut_short.numpy()) == 2  # trunc and flip, once each
    for _ in data.read_files(files.split(","), skip_corrupt=True, cut_short=cut_short):
        pass
    assert int(cut_short.numpy()) == 4


def test_training_checks_each_file_to_its_end_in_the_first_epoch_only(shards):
    # The later epochs read the same bytes without the per-record count (faster); a damaged
    # file still ends at its damage there, and is counted once.
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    files = ",".join([shards["good"], shards["trunc"], shards["flip"]])
    readable = sum(verify.verify_file(shards[k]).records for k in ("good", "trunc", "flip"))
    cut_short = tf.Variable(0, dtype=tf.int64, trainable=False)
    # One file at a time, in order, unshuffled: the first 4 × readable examples are 4 epochs.
    options = data.InputOptions(skip_corrupt=True, cut_short=cut_short, shuffle_buffer=1,
                                cycle_length=1, deterministic=True)
    dataset = data.input_fn(files, None, 1, True, options)
    ids = collections.Counter(batch["clip_id"].numpy()[0]
                              for batch in dataset.take(4 * readable))
    assert int(cut_short.numpy()) == 2  # trunc and flip, once each over four epochs
    one_pass = collections.Counter(batch["clip_id"].numpy()[0] for batch in data.input_fn(
        files, None, 1, False, data.InputOptions(skip_corrupt=True)))
    assert sum(one_pass.values()) == readable
    assert ids == collections.Counter({clip: 4 * n for clip, n in one_pass.items()})


def test_verify_command_lists_bad_files_and_exits_non_zero(shards, tmp_path):
    pattern = ",".join(shards[k] for k in ("good", "trunc", "empty"))
    result = subprocess.run([sys.executable, "-m", "speech2face.records.verify",
                             f"--records={pattern}"], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1
    assert f"{shards['good']}: 4 records ok" in result.stdout
    trunc = verify.verify_file(shards["trunc"]).records
    assert f"3 files, {4 + trunc} good records, 2 bad files" in result.stdout
    bad = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(bad) == 2 and any(shards["trunc"] in line for line in bad)


def test_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path):
    with run_dir.RunLock(str(tmp_path)):
        with pytest.raises(errors.UserError, match="in use by another training run"):
            with run_dir.RunLock(str(tmp_path)):
                pass
    assert not os.path.exists(tmp_path / run_dir.LOCK_FILE)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / run_dir.LOCK_FILE).write_text(json.dumps(
        {"pid": dead.pid, "host": socket.gethostname()}))
    with run_dir.RunLock(str(tmp_path)) as lock:
        assert json.loads((tmp_path / run_dir.LOCK_FILE).read_text())["pid"] == os.getpid()
        assert lock.owner["pid"] == os.getpid()


def test_model_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(errors.UserError, match="is a file"):
        run_dir.check_writable(str(tmp_path / "f"))
    run_dir.check_writable(str(tmp_path / "new" / "run"))  # creatable: fine


@pytest.mark.parametrize("mode", [0o644, 0o755])
def test_model_dir_under_a_file_is_refused_as_a_file(tmp_path, mode):
    """Under a regular file the model_dir cannot be created: said so, whatever the file's mode
    (0644 read as "not writable", 0755 passed the check and failed at makedirs)."""
    (tmp_path / "f").write_text("x")
    os.chmod(tmp_path / "f", mode)
    with pytest.raises(errors.UserError, match=r"cannot be created: .*/f is a file"):
        run_dir.check_writable(str(tmp_path / "f" / "run"))
    assert (tmp_path / "f").read_text() == "x"


def test_unwritable_model_dir_is_refused_without_a_read_only_directory(tmp_path, monkeypatch):
    """What the root-skipped test below checks, for any user: the writability check's answer
    (os.access) makes the refusal, naming the directory that is not writable."""
    monkeypatch.setattr(run_dir.os, "access", lambda path, mode: False)
    with pytest.raises(errors.UserError, match=f"run cannot be created: {tmp_path} is not "
                                               "writable"):
        run_dir.check_writable(str(tmp_path / "run"))
    with pytest.raises(errors.UserError, match=f"--model_dir={tmp_path} is not writable"):
        run_dir.check_writable(str(tmp_path))
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_model_dir_is_refused(tmp_path):
    os.chmod(tmp_path, 0o555)
    try:
        with pytest.raises(errors.UserError, match="not writable"):
            run_dir.check_writable(str(tmp_path / "run"))
    finally:
        os.chmod(tmp_path, 0o755)


class _Task:
    name = "decoder"

    def __init__(self, **cfg):
        self.cfg = {"preset": "small", "learning_rate": 1e-3, **cfg}

    def config(self):
        return {"architecture": {"model": "face_decoder"}, **self.cfg}


def _run(**trainer):
    return {"data": {"train_records": "/d/train-*", "eval_records": None},
            "trainer": {**vars(config.TrainerConfig(**trainer))}, "runtime": {}}


def test_resume_with_other_settings_is_refused_and_safe_changes_are_recorded(tmp_path):
    model_dir = str(tmp_path)
    run_dir.RunRecord(model_dir, _run(train_steps=10), _Task()).write()
    os.makedirs(os.path.join(model_dir, export.CHECKPOINT_DIR))
    with open(os.path.join(model_dir, export.CHECKPOINT_DIR, "checkpoint"), "w") as f:
        f.write('model_checkpoint_path: "ckpt-10"\n')
    open(os.path.join(model_dir, export.CHECKPOINT_DIR, "ckpt-10.index"), "w").close()
    with pytest.raises(errors.UserError, match=r"task.learning_rate: 0.001 in the run, 0.01 now; "
                                               r"trainer.seed: 0 in the run, 3 now"):
        run_dir.RunRecord(model_dir, _run(train_steps=10, seed=3),
                          _Task(learning_rate=0.01)).check()
    record = run_dir.RunRecord(model_dir, _run(train_steps=20, summary_every=5), _Task())
    record.check()
    record.write()
    recorded = export.read_run_config(model_dir)
    assert recorded["resumed"][0]["at_step"] == 10
    assert recorded["resumed"][0]["changed"] == {
        "trainer.train_steps": {"was": 10, "now": 20},
        "trainer.summary_every": {"was": 50, "now": 5}}


def test_user_errors_are_one_line_and_bugs_are_not():
    assert config_flags.user_message(errors.UserError("bad thing: fix it")) == "bad thing: fix it"
    assert "Read-only" in config_flags.user_message(OSError(30, "x", "/ro/dir"))
    assert config_flags.user_message(KeyError("bug")) is None
    assert config_flags.user_message(ValueError("bug")) is None


def _train(*flags_, timeout=300):
    return subprocess.run([sys.executable, "train.py", "--stage=decoder", "--experiment=toy_decoder",
                           "--perceptual_weight=0", "--global_batch_size=2", "--steps_per_loop=2",
                           "--summary_every=2", "--checkpoint_every=2", *flags_], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def _error_lines(result):
    return [line for line in result.stderr.splitlines() if line.startswith("train.py: error:")]


@pytest.mark.slow
def test_train_cli_bad_inputs_end_in_one_line_and_write_nothing(tiny_world, shards, tmp_path):
    world, _ = tiny_world
    train = f"--train_records={world}/train-*.tfrecord"
    cases = [
        ([train, "--train_steps=-5"], "train_steps must be at least 1"),
        ([train, "--steps_per_loop=0"], "steps_per_loop must be at least 1"),
        ([train, "--global_batch_size=0"], "global_batch_size must be at least 1"),
        # Larger than the data set: every batch would repeat it (it ran out of memory).
        ([train, "--global_batch_size=100000", "--train_steps=2"],
         "is larger than the training set"),
        ([f"--train_records={shards['good']},{shards['garbage']}", "--train_steps=2"],
         "not a TFRecord file"),
        ([f"--train_records={shards['good']},{shards['trunc']}", "--train_steps=2",
          "--nocanonical_faces"], f"{shards['trunc']}: "),
    ]
    for i, (args, message) in enumerate(cases):
        model_dir = tmp_path / f"run{i}"
        result = _train(*args, f"--model_dir={model_dir}")
        assert result.returncode == 1, result.stderr[-2000:]
        lines = _error_lines(result)
        assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
        assert "Traceback" not in result.stderr
        assert not os.path.exists(model_dir / "config.json")
    # A busy model_dir: refused while its lock's process lives.
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / run_dir.LOCK_FILE).write_text(json.dumps({"pid": os.getpid(),
                                                      "host": socket.gethostname()}))
    result = _train(train, "--train_steps=2", f"--model_dir={busy}")
    assert result.returncode == 1 and "in use by another training run" in _error_lines(result)[0]
    assert signal.SIGTERM == 15  # the exit status of a stopped run is 128 + 15 (test_training)


@pytest.mark.slow
def test_train_and_evaluate_refuse_an_output_under_a_file_in_one_line(tiny_world, tmp_path):
    """train.py --model_dir and evaluate.py --output_dir under a regular file (NotADirectory
    for any user, root too): one line naming the file, exit 1, nothing written."""
    world, _ = tiny_world
    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine")
    result = _train(f"--train_records={world}/train-*.tfrecord", "--train_steps=2",
                    f"--model_dir={blocker / 'run'}")
    assert result.returncode == 1, result.stderr[-2000:]
    assert _error_lines(result) == [
        f"train.py: error: --model_dir={blocker / 'run'} cannot be created: {blocker} is a "
        "file, not a directory: choose another path"], result.stderr[-2000:]
    result = subprocess.run(
        [sys.executable, "evaluate.py", f"--model={tmp_path / 'model'}",
         f"--records={world}/test-*.tfrecord", f"--output_dir={blocker / 'eval'}"], cwd=REPO,
        capture_output=True, text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 1, result.stderr[-2000:]
    assert [line for line in result.stderr.splitlines() if ": error: " in line] == [
        f"evaluate.py: error: --output_dir={blocker / 'eval'}: {blocker} is a file, not a "
        "directory; choose a directory you can write to"], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"] and blocker.read_text() == "mine"
