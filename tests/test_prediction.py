"""Prediction: media files of any kind and length in, one face PNG per file out."""

import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from speech2face import audio, prediction, records
from speech2face import media as media_lib
from speech2face.models import artifact
from tests.support import helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def test_clip(tiny_world):
    """The first held-out example of the tiny world (its stored clip and spectrogram)."""
    world, _ = tiny_world
    path = sorted(tf.io.gfile.glob(os.path.join(world, "test-*.tfrecord")))[0]
    return records.decode_example(next(iter(tf.data.TFRecordDataset(path))).numpy())


@pytest.fixture(scope="module")
def media(test_clip, tmp_path_factory):
    """A directory with a toy voice as wav (9 s: cropped) and mp4 (2 s: tiled), a short chirp,
    a corrupted file, and a text file a directory scan must skip."""
    directory = tmp_path_factory.mktemp("media")
    voice = test_clip.waveform.astype(np.float32) / 32768.0
    helpers.write_wav(directory / "voice.wav", np.tile(voice, 2)[:9 * audio.SAMPLE_RATE])
    helpers.write_wav(directory / "short.wav", voice[:2 * audio.SAMPLE_RATE])
    helpers.encode_with_ffmpeg(directory / "short.wav", directory / "video.mp4")
    os.remove(directory / "short.wav")
    helpers.write_wav(directory / "chirp.flac", helpers.chirp(80, 400, 1.0))
    (directory / "corrupted.mp3").write_bytes(b"\x00\xffnot an mp3 at all" * 64)
    (directory / "notes.txt").write_text("not media")
    return directory


def _check_png(path, size=256):
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.size == (size, size) and image.mode == "RGB"


def test_output_paths():
    single, sheet = prediction.output_paths(["in/a.wav"], "out/face.png")
    assert single == {"in/a.wav": "out/face.png"} and sheet is None
    several, sheet = prediction.output_paths(["in/a.wav", "x/b.mp4", "y/a.mp4"], "out/face.png")
    assert several == {"in/a.wav": "out/face_a_wav.png", "x/b.mp4": "out/face_b.png",
                       "y/a.mp4": "out/face_a_mp4.png"}
    assert sheet == "out/face.png"
    in_dir, sheet = prediction.output_paths(["p/a.wav", "q/a.wav"], "faces/")
    assert in_dir == {"p/a.wav": "faces/a_wav.png", "q/a.wav": "faces/a_wav_2.png"}
    assert sheet == os.path.join("faces/", "contact_sheet.png")


def test_predict_files(tiny_models, media, tmp_path):
    paths = [media / "voice.wav", media / "video.mp4", media / "corrupted.mp3",
             media / "missing.wav"]
    results = prediction.predict_files(tiny_models.encoder_dir, paths, str(tmp_path / "face.png"),
                                       save_features=True)
    assert [r.path for r in results] == [str(p) for p in paths]
    assert [r.ok for r in results] == [True, True, False, False]
    for r, stem in zip(results[:2], ("voice", "video")):
        assert r.output == str(tmp_path / f"face_{stem}.png")
        _check_png(r.output)
        feature = np.load(str(tmp_path / f"face_{stem}.npy"))
        assert feature.shape == (4096,) and feature.dtype == np.float32
    for r, message in zip(results[2:], ("not a decodable audio file", "file not found")):
        assert isinstance(r.output, audio.AudioError)
        assert str(r.output).startswith(r.path) and message in str(r.output)
    assert results.sheet == str(tmp_path / "face.png")
    with Image.open(results.sheet) as sheet:
        # Two captioned tiles in one row.
        width, height = sheet.size
        assert 2 * prediction.SHEET_TILE <= width < 3 * prediction.SHEET_TILE
        assert prediction.SHEET_TILE < height < 2 * prediction.SHEET_TILE


def test_prediction_matches_the_stored_spectrogram(tiny_models, test_clip):
    """A clip through the model gives the v_s that evaluation computes from the records."""
    model = artifact.load_either(model_dir=tiny_models.encoder_dir)
    encoder, decoder = model.encoder, model.decoder
    waveform = test_clip.waveform.astype(np.float32) / 32768.0
    v_s, faces = model.predict([waveform, waveform[:20000]])
    assert v_s.shape == (2, 4096) and faces.shape == (2, 64, 64, 3) and faces.dtype == np.uint8
    stored = encoder(test_clip.spectrogram[None].astype(np.float32), training=False).numpy()[0]
    cos = v_s[0] @ stored / np.linalg.norm(v_s[0]) / np.linalg.norm(stored)
    assert cos > 0.999
    # Exaggeration changes the face, not v_s; e = 0 is the plain decode.
    v_e, exaggerated = model.predict(waveform, exaggeration=0.7)  # one waveform
    np.testing.assert_allclose(v_e[0], v_s[0], rtol=1e-5, atol=1e-6)  # a batch of 1, not 2
    expected = decoder(decoder.exaggerate(tf.constant(v_e), 0.7), training=False)["image"]
    np.testing.assert_allclose(exaggerated, media_lib.to_uint8(expected.numpy()), atol=1)
    assert np.abs(exaggerated.astype(int) - faces[:1]).max() > 0
    with pytest.raises(ValueError, match="one of the two"):
        artifact.load_either()


def test_directory_input(tiny_models, media, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "faces"
    results = prediction.predict_files(tiny_models.encoder_dir, [media, empty], str(out) + "/")
    by_name = {os.path.basename(r.path): r for r in results}
    assert set(by_name) == {"chirp.flac", "corrupted.mp3", "video.mp4", "voice.wav", "empty"}
    assert not by_name["corrupted.mp3"].ok
    assert not by_name["empty"].ok and "no audio or video files" in str(by_name["empty"].output)
    for name in ("chirp.flac", "video.mp4", "voice.wav"):
        assert by_name[name].output == os.path.join(str(out) + "/", name.split(".")[0] + ".png")
        _check_png(by_name[name].output)
    assert results.sheet == os.path.join(str(out) + "/", "contact_sheet.png")
    assert os.path.exists(results.sheet)
    with pytest.raises(FileNotFoundError, match="no exported voice encoder"):
        prediction.predict_files(str(tmp_path), [media / "voice.wav"], str(tmp_path / "x.png"))


def test_under_a_second_is_refused_and_the_rest_is_written(tiny_models, media, tmp_path):
    """10 ms of audio holds no word: it is reported like an unreadable file, not drawn."""
    blip = helpers.write_wav(tmp_path / "blip.wav", helpers.sine(220, 0.01))
    results = prediction.predict_files(tiny_models.encoder_dir, [blip, media / "voice.wav"],
                                       str(tmp_path / "faces") + "/")
    assert [r.ok for r in results] == [False, True]
    assert isinstance(results[0].output, audio.AudioError)
    assert str(results[0].output) == (f"{blip}: 0.01 s of audio; a prediction needs at least "
                                      "1 s of speech")
    assert not (tmp_path / "faces" / "blip.png").exists()
    model = artifact.load_either(model_dir=tiny_models.encoder_dir)
    with pytest.raises(audio.AudioError, match="waveform 0: 0.50 s of audio"):
        model.predict(np.zeros(8000, np.float32))


@pytest.mark.slow
def test_cli(tiny_models, media, tmp_path):
    output = tmp_path / "face.png"
    proc = subprocess.run(
        [sys.executable, "predict.py", f"--model_dir={tiny_models.encoder_dir}",
         f"--audio={media / 'voice.wav'}", f"--audio={media / 'corrupted.mp3'}",
         f"--output={output}", "--image_size=128"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert f"{media / 'corrupted.mp3'}: not a decodable audio file" in proc.stderr
    assert "1 of 2 inputs failed" in proc.stderr and "Traceback" not in proc.stderr
    assert f"-> {tmp_path / 'face_voice.png'}" in proc.stdout
    _check_png(tmp_path / "face_voice.png", size=128)


@pytest.mark.slow
def test_cli_one_input(tiny_models, media, tmp_path):
    proc = subprocess.run(
        [sys.executable, "predict.py", f"--model_dir={tiny_models.encoder_dir}",
         f"--audio={media / 'voice.wav'}", f"--output={tmp_path / 'one.png'}"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_png(tmp_path / "one.png")


def test_check_segment_refuses_too_little_sound():
    """A 10 ms blip, a constant (DC) level, or sound only after the first 6 s, draws no face;
    1 s of a tone does."""
    sr = audio.SAMPLE_RATE
    tone = np.sin(2 * np.pi * 220 * np.arange(sr) / sr).astype(np.float32)
    assert prediction.check_segment(tone, "tone.wav") is tone
    blip = np.zeros(2 * sr, np.float32)
    blip[:sr // 100] = tone[:sr // 100]
    with pytest.raises(audio.AudioError, match="blip.wav: only 0.01 s"):
        prediction.check_segment(blip, "blip.wav")
    with pytest.raises(audio.AudioError, match="dc.wav: only 0.00 s .* or a constant level"):
        prediction.check_segment(np.full(3 * sr, 0.5, np.float32), "dc.wav")
    late = np.concatenate([np.zeros(audio.SEGMENT_SAMPLES, np.float32), tone])
    with pytest.raises(audio.AudioError, match="late.wav: only 0.00 s"):
        prediction.check_segment(late, "late.wav")


@pytest.mark.parametrize("kwargs, message", [
    ({"image_size": 0}, "image_size must be in"),
    ({"image_size": 100000}, "image_size must be in"),  # 30 GB of pixels
    ({"exaggeration": float("nan")}, "exaggeration must be a finite"),
    ({"exaggeration": float("inf")}, "exaggeration must be a finite"),
    ({"output": ""}, "--output is empty"),
    ({"output": "IN/clip.wav"}, ".wav is not an image format"),  # the input itself
    ({"output": "IN/clip.wav/face.png"}, "is a file, not a directory"),
])
def test_bad_settings_are_refused_before_the_model_loads(tmp_path, kwargs, message):
    clip = helpers.write_wav(tmp_path / "clip.wav", helpers.sine(220, 2.0))
    before = clip.read_bytes()
    settings = {"output": str(tmp_path / "face.png"), "image_size": 64, "exaggeration": 0.0,
                **kwargs}
    settings["output"] = settings["output"].replace("IN", str(tmp_path))
    with pytest.raises(ValueError, match=message):
        # No model at all: the settings are refused before anything looks for one.
        prediction.predict_files(None, [str(clip)], **settings, model=str(tmp_path / "none"))
    assert clip.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["clip.wav"]


def test_long_files_and_other_image_formats(tiny_models, test_clip, tmp_path):
    """A 10-hour WAV (sparse on disk) is read for its first 6 s only, the same face as its
    first minute gives; a .jpg --output (here the contact sheet) is a JPEG; no temporary file
    is left."""
    voice = test_clip.waveform.astype(np.float32) / 32768.0
    minute = helpers.write_wav(tmp_path / "minute.wav",
                               np.tile(voice, 30)[:60 * audio.SAMPLE_RATE])
    long = tmp_path / "long.wav"
    with open(minute, "rb") as src, open(long, "wb") as dst:
        header, data = src.read(44), src.read()
        assert header[36:40] == b"data"
        n = 10 * 3600 * audio.SAMPLE_RATE * 2
        dst.write(header[:4] + (36 + n).to_bytes(4, "little") + header[8:40]
                  + n.to_bytes(4, "little") + data)
        dst.truncate(44 + n)
    results = prediction.predict_files(tiny_models.encoder_dir, [str(minute), str(long)],
                                       str(tmp_path / "out" / "face.jpg"), image_size=64,
                                       save_features=True)
    assert all(r.ok for r in results), results
    assert Image.open(results.sheet).format == "JPEG"
    # The same v_s up to float rounding (two rows of one batch can round differently).
    v_s = [np.load(os.path.splitext(r.output)[0] + ".npy") for r in results]
    np.testing.assert_allclose(v_s[0], v_s[1], rtol=1e-4, atol=1e-4 * np.abs(v_s[0]).max())
    assert not [name for name in os.listdir(tmp_path / "out") if "partial" in name]


def test_float_samples_far_outside_pcm_range_are_refused(tiny_models, media, tmp_path):
    """A float WAV whose samples reach ±300 is not audio scaled as floats (integer values stored
    as float, or garbage): it is named with its peak, not drawn; a real float file's small
    overshoot past 1 is fine."""
    tone = helpers.sine(220, 2.0, amplitude=1.0)
    loud = helpers.write_wav(tmp_path / "loud.wav", tone * 300, subtype="FLOAT")
    over = helpers.write_wav(tmp_path / "over.wav", tone * 1.3, subtype="FLOAT")
    with pytest.raises(audio.AudioError, match=r"loud.wav: samples reach ±300,"):
        audio.load_audio(loud)
    assert np.max(np.abs(audio.load_audio(over))) > 1.2
    results = prediction.predict_files(tiny_models.encoder_dir, [loud, over],
                                       str(tmp_path / "faces") + "/")
    assert [r.ok for r in results] == [False, True]
    assert str(results[0].output).startswith(f"{loud}: samples reach ±300, but float PCM")
    assert not (tmp_path / "faces" / "loud.png").exists()
    model = artifact.load_either(model_dir=tiny_models.encoder_dir)
    with pytest.raises(audio.AudioError, match="waveform 0: samples reach ±300"):
        model.predict(tone * 300)


@pytest.mark.slow
def test_cli_float_garbage_is_named_with_its_peak(tiny_models, tmp_path):
    loud = helpers.write_wav(tmp_path / "loud.wav", helpers.sine(220, 2.0, amplitude=1.0) * 300,
                             subtype="FLOAT")
    proc = subprocess.run(
        [sys.executable, "predict.py", f"--model_dir={tiny_models.encoder_dir}",
         f"--audio={loud}", f"--output={tmp_path / 'face.png'}"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert errors == [f"predict.py: error: {loud}: samples reach ±300, but float PCM lies in "
                      "[-1, 1] (more than 2 is not audio scaled as floats: integer samples "
                      "stored as float, or garbage); rescale it to [-1, 1]"], proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "face.png").exists()
    assert "inputs failed" not in proc.stderr  # one input: its error is the whole story
