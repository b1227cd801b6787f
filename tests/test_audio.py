"""Tests for speech2face.audio: decoding, tiling/cropping, the spectrogram and its NumPy twin."""

import os
import pathlib

import librosa
import numpy as np
import pytest
import tensorflow as tf

from speech2face import audio
from tests.support import helpers


def _inverse_power_law(y):
    return np.sign(y) * np.abs(y) ** (1.0 / audio.POWER)


def assert_spectrograms_close(actual, expected):
    """float32 FFTs differ from float64 ones by ~1e-6 absolute; |x|^0.3 turns that into large
    differences on bins that are ~0 (its slope is infinite there). So compare the linear values
    everywhere, and the compressed values where compression is well conditioned."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype == np.float32
    linear = _inverse_power_law(expected.astype(np.float64))
    scale = max(1.0, np.abs(linear).max())
    np.testing.assert_allclose(_inverse_power_law(actual.astype(np.float64)), linear,
                               rtol=0, atol=2e-6 * scale)
    well_conditioned = np.abs(expected) > 0.1
    np.testing.assert_allclose(actual[well_conditioned], expected[well_conditioned],
                               rtol=0, atol=1e-3)


# ----------------------------------------------------------------------------------------------
# Spectrogram


def test_constants_agree():
    assert audio.SEGMENT_SAMPLES == int(audio.SEGMENT_SECONDS * audio.SAMPLE_RATE) == 96000
    assert audio.NUM_FREQ_BINS == audio.FFT_LENGTH // 2 + 1 == 257
    assert (audio.WINDOW_LENGTH, audio.HOP_LENGTH, audio.POWER) == (400, 160, 0.3)


@pytest.mark.parametrize("num_samples, frames", [(96000, 598), (48000, 298), (400, 1), (559, 1),
                                                 (560, 2)])
def test_frame_count(num_samples, frames):
    assert audio.num_frames(num_samples) == frames
    x = helpers.noise(num_samples / 16000)
    assert audio.spectrogram(x).shape == (frames, 257, 2)
    assert audio.spectrogram_np(x).shape == (frames, 257, 2)


def test_librosa_frame_counts_are_the_trap():
    # Documents why audio.py does its own framing: librosa frames by n_fft, not by the window.
    y = helpers.sine(440, 6.0)
    kwargs = {"n_fft": 512, "hop_length": 160, "win_length": 400, "window": "hann"}
    assert librosa.stft(y, center=True, **kwargs).shape == (257, 601)
    assert librosa.stft(y, center=False, **kwargs).shape == (257, 597)
    assert audio.spectrogram_np(y).shape[0] == 598


@pytest.mark.parametrize("name", ["random_batched", "sine_6s", "chirp_3s", "noise_odd_length"])
def test_tf_matches_numpy(name):
    rng = np.random.default_rng(0)
    x = {
        "random_batched": rng.uniform(-1, 1, (2, 3, 4000)).astype(np.float32),
        "sine_6s": helpers.sine(440, 6.0),
        "chirp_3s": helpers.chirp(100, 4000, 3.0),
        "noise_odd_length": helpers.noise(0.3217),
    }[name]
    assert_spectrograms_close(audio.spectrogram(x).numpy(), audio.spectrogram_np(x))


def test_batched_equals_one_by_one():
    x = np.random.default_rng(1).uniform(-1, 1, (2, 3, 1200)).astype(np.float32)
    batched = audio.spectrogram(x).numpy()
    assert batched.shape == (2, 3, 6, 257, 2)
    np.testing.assert_allclose(batched[1, 2], audio.spectrogram(x[1, 2]).numpy(), atol=1e-6)
    np.testing.assert_array_equal(audio.spectrogram_np(x)[1, 2], audio.spectrogram_np(x[1, 2]))


def test_inside_tf_function_with_unknown_shapes():
    fn = tf.function(audio.spectrogram,
                     input_signature=[tf.TensorSpec([None, None], tf.float32)])
    x = np.stack([helpers.sine(300, 0.5), helpers.chirp(50, 2000, 0.5)])
    out = fn(x)
    assert out.shape == (2, audio.num_frames(8000), 257, 2)
    np.testing.assert_allclose(out.numpy(), audio.spectrogram(x).numpy(), atol=1e-6)


def test_inside_tf_function_with_unknown_rank():
    fn = tf.function(audio.spectrogram, input_signature=[tf.TensorSpec(None, tf.float32)])
    x = helpers.chirp(50, 2000, 0.5)[None]
    np.testing.assert_allclose(fn(x).numpy(), audio.spectrogram(x).numpy(), atol=1e-6)


def test_power_law_equals_the_sign_and_pow_form():
    # x·|x|^-0.7 against sgn(x)·|x|^0.3 over magnitudes from subnormal to large; below 1e-30
    # both are under 1e-9.
    magnitudes = np.concatenate([[0.0, 1e-45, 1e-38, 1e-31], np.logspace(-30, 4, 200)])
    x = np.concatenate([magnitudes, -magnitudes]).astype(np.float32)
    expected = np.sign(x.astype(np.float64)) * np.abs(x.astype(np.float64)) ** audio.POWER
    actual = audio._power_law(tf.constant(x)).numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-9)
    assert actual[0] == 0.0


def test_impulse_gives_exact_per_component_power_law():
    # One frame holding an impulse of height a at sample k: the window is w[k], so
    # S[f] = a·w[k]·exp(-2πi·f·k/512), re = A·cos(θ), im = -A·sin(θ), θ = 2π·f·k/512.
    a, k = 0.8, 150
    x = np.zeros(400, np.float32)
    x[k] = a
    amplitude = a * 0.5 * (1 - np.cos(2 * np.pi * k / 400))  # periodic Hann
    theta = 2 * np.pi * np.arange(257) * k / 512
    re, im = amplitude * np.cos(theta), -amplitude * np.sin(theta)
    expected = np.stack([np.sign(re) * np.abs(re) ** 0.3, np.sign(im) * np.abs(im) ** 0.3], -1)

    # Where re or im is exactly 0 (e.g. im at f = 0), float rounding of ~1e-17 is amplified by
    # |x|^0.3, so those bins only need to be near 0; everywhere else the values are exact.
    exact = np.abs(np.stack([re, im], -1)) > 1e-9
    actual = audio.spectrogram_np(x)[0]
    np.testing.assert_allclose(actual[exact], expected[exact], rtol=1e-6, atol=1e-7)
    assert np.abs(actual[~exact]).max() < 1e-4 and (~exact).sum() <= 8
    assert_spectrograms_close(audio.spectrogram(x).numpy()[0], expected.astype(np.float32))
    # The common mistake, compressing magnitude and keeping phase, gives different numbers.
    by_magnitude = amplitude ** 0.3 * np.stack([np.cos(theta), -np.sin(theta)], -1)
    assert np.abs(by_magnitude - expected).max() > 0.1


def test_power_law_is_per_component_on_a_real_signal():
    x = helpers.chirp(100, 3000, 1.0)
    frames = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), 400)[::160]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)  # periodic Hann, by hand
    stft = np.fft.rfft(frames * window, n=512)
    per_component = np.stack([np.sign(stft.real) * np.abs(stft.real) ** 0.3,
                              np.sign(stft.imag) * np.abs(stft.imag) ** 0.3], -1)
    compressed_magnitude = np.abs(stft) ** 0.3 * np.exp(1j * np.angle(stft))
    by_magnitude = np.stack([compressed_magnitude.real, compressed_magnitude.imag], -1)

    np.testing.assert_allclose(audio.spectrogram_np(x), per_component, atol=1e-5)
    assert_spectrograms_close(audio.spectrogram(x).numpy(), per_component.astype(np.float32))
    assert np.abs(audio.spectrogram_np(x) - by_magnitude).max() > 0.5


def test_zeros_give_zeros_and_finite_gradients():
    x = tf.zeros([2, 800])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = audio.spectrogram(x)
        total = tf.reduce_sum(y)
    np.testing.assert_array_equal(y.numpy(), 0.0)
    assert np.all(np.isfinite(tape.gradient(total, x).numpy()))
    np.testing.assert_array_equal(audio.spectrogram_np(np.zeros(800)), 0.0)


def test_float64_and_list_inputs_are_accepted():
    x = helpers.sine(1000, 0.05).astype(np.float64)
    assert audio.spectrogram(x).dtype == tf.float32
    assert audio.spectrogram_np(list(x)).dtype == np.float32


def test_too_short_raises():
    with pytest.raises(ValueError, match="at least 400 samples"):
        audio.spectrogram(np.zeros(399, np.float32))
    with pytest.raises(ValueError, match="at least 400 samples"):
        audio.spectrogram_np(np.zeros(399))


# ----------------------------------------------------------------------------------------------
# fit_to_length


def test_fit_to_length_tiles_short_clips():
    np.testing.assert_array_equal(audio.fit_to_length([1, 2, 3], 7), [1, 2, 3, 1, 2, 3, 1])
    np.testing.assert_array_equal(audio.fit_to_length([5], 3), [5, 5, 5])
    np.testing.assert_array_equal(audio.fit_to_length([1, 2, 3], 3), [1, 2, 3])


def test_fit_to_length_crops_at_offset():
    x = np.arange(10)
    np.testing.assert_array_equal(audio.fit_to_length(x, 4), [0, 1, 2, 3])
    np.testing.assert_array_equal(audio.fit_to_length(x, 4, offset=6), [6, 7, 8, 9])
    with pytest.raises(ValueError, match="offset"):
        audio.fit_to_length(x, 4, offset=7)
    with pytest.raises(ValueError, match="offset"):
        audio.fit_to_length(x[:3], 4, offset=1)


def test_fit_to_length_works_on_leading_axes():
    x = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    tiled = audio.fit_to_length(x, 5)
    assert tiled.shape == (2, 2, 5) and tiled.dtype == np.float32
    np.testing.assert_array_equal(tiled[1, 0], [6, 7, 8, 6, 7])
    np.testing.assert_array_equal(audio.fit_to_length(x, 2, offset=1)[0, 1], [4, 5])


def test_fit_to_length_makes_a_segment_of_any_clip():
    for seconds in (0.7, 3.0, 6.0, 9.3):
        x = helpers.noise(seconds)
        segment = audio.fit_to_length(x, audio.SEGMENT_SAMPLES)
        assert segment.shape == (96000,)
        np.testing.assert_array_equal(segment[:min(x.size, 96000)], x[:96000])


def test_fit_to_length_rejects_empty_input():
    with pytest.raises(ValueError, match="empty"):
        audio.fit_to_length(np.zeros(0), 10)


def test_random_offset_is_in_range_and_reproducible():
    offsets = [audio.random_offset(100, 90, np.random.default_rng(s)) for s in range(200)]
    assert min(offsets) == 0 and max(offsets) == 10
    assert audio.random_offset(50, 90, np.random.default_rng(0)) == 0
    assert audio.random_offset(90, 90, np.random.default_rng(0)) == 0
    first = audio.random_offset(10**6, 96000, np.random.default_rng(7))
    assert first == audio.random_offset(10**6, 96000, np.random.default_rng(7))


# ----------------------------------------------------------------------------------------------
# load_audio: formats


@pytest.fixture(scope="module")
def tone_wav(tmp_path_factory):
    """A 1 s, 440 Hz, 16 kHz mono wav."""
    return helpers.write_wav(tmp_path_factory.mktemp("tone") / "tone.wav", helpers.sine(440, 1.0))


def _check_tone(waveform, seconds=1.0, tolerance_samples=0, amplitude=0.5, rel=0.02):
    assert waveform.dtype == np.float32 and waveform.ndim == 1
    assert abs(waveform.size - seconds * 16000) <= tolerance_samples
    assert helpers.peak_frequency(waveform) == pytest.approx(440, abs=2)
    # Sine amplitude from the RMS of the middle half: lossy codecs overshoot at the edges.
    middle = waveform[waveform.size // 4:-waveform.size // 4]
    assert np.sqrt(2 * np.mean(middle**2)) == pytest.approx(amplitude, rel=rel)


def test_load_wav_16k(tone_wav):
    waveform = audio.load_audio(tone_wav)
    _check_tone(waveform)
    np.testing.assert_allclose(waveform, helpers.sine(440, 1.0), atol=1 / 32768)


def test_load_wav_44k_stereo_is_downmixed_and_resampled(tmp_path):
    tone = helpers.sine(440, 1.0, sample_rate=44100)
    stereo = np.stack([0.6 / 0.5 * tone, -0.2 / 0.5 * tone], axis=1)  # mean is 0.2·sin
    path = helpers.write_wav(tmp_path / "stereo44k.wav", stereo, sample_rate=44100)
    _check_tone(audio.load_audio(path), tolerance_samples=1, amplitude=0.2)


def test_load_wav_to_other_rate(tone_wav):
    waveform = audio.load_audio(tone_wav, sample_rate=8000)
    assert abs(waveform.size - 8000) <= 1
    assert helpers.peak_frequency(waveform, 8000) == pytest.approx(440, abs=2)


@pytest.mark.parametrize("name, subtype", [("tone.flac", "PCM_16"), ("tone.ogg", "VORBIS"),
                                           ("float.wav", "FLOAT")])
def test_load_soundfile_formats(tmp_path, name, subtype):
    path = helpers.write_wav(tmp_path / name, helpers.sine(440, 1.0), subtype=subtype)
    _check_tone(audio.load_audio(path), tolerance_samples=0)


@pytest.mark.parametrize("name", ["tone.mp3", "tone.m4a", "tone.mp4", "tone.mkv", "tone.webm"])
def test_load_through_ffmpeg(tmp_path, tone_wav, name):
    path = helpers.encode_with_ffmpeg(tone_wav, tmp_path / name)
    # ffmpeg undoes encoder padding/priming (exact here); allow 10 ms for other ffmpeg builds.
    _check_tone(audio.load_audio(path), tolerance_samples=160, rel=0.1)


def test_load_through_ffmpeg_resamples_and_downmixes(tmp_path, tone_wav):
    path = helpers.encode_with_ffmpeg(tone_wav, tmp_path / "stereo48k.m4a",
                                      extra_args=["-ac", "2", "-ar", "48000"])
    _check_tone(audio.load_audio(path), tolerance_samples=160, rel=0.1)


def test_misnamed_file_falls_back_to_ffmpeg(tmp_path, tone_wav):
    # An AAC file with a .wav name: libsndfile refuses it, ffmpeg probes the content.
    m4a = helpers.encode_with_ffmpeg(tone_wav, tmp_path / "tone.m4a")
    path = tmp_path / "actually_aac.wav"
    path.write_bytes(m4a.read_bytes())
    _check_tone(audio.load_audio(path), tolerance_samples=160, rel=0.1)


def test_truncated_data_keeps_what_decodes(tmp_path, tone_wav):
    # Policy: a file cut inside its sample data is still usable; we return what is there.
    data = tone_wav.read_bytes()
    path = tmp_path / "cut_in_data.wav"
    path.write_bytes(data[:44 + 2 * 8000])
    waveform = audio.load_audio(path)
    assert waveform.size == 8000
    assert helpers.peak_frequency(waveform) == pytest.approx(440, abs=4)


# ----------------------------------------------------------------------------------------------
# load_audio: bad input


def _assert_audio_error(path, problem):
    with pytest.raises(audio.AudioError) as excinfo:
        audio.load_audio(path)
    assert isinstance(excinfo.value, ValueError)
    message = str(excinfo.value)
    assert path.name in message and problem in message, message


def test_missing_file(tmp_path):
    _assert_audio_error(tmp_path / "nowhere.wav", "file not found")


def test_empty_file(tmp_path):
    path = tmp_path / "clip.wav"
    path.write_bytes(b"")
    _assert_audio_error(path, "empty (0 bytes)")


def test_directory(tmp_path):
    path = tmp_path / "folder.wav"
    path.mkdir()
    _assert_audio_error(path, "directory")


@pytest.mark.parametrize("name", ["notes.txt", "notes.wav", "notes.mp3"])
def test_text_file(tmp_path, name):
    path = tmp_path / name
    path.write_text("this is not audio\n" * 20)
    _assert_audio_error(path, "not a decodable audio file")


def test_wav_header_only(tmp_path, tone_wav):
    path = tmp_path / "header_only.wav"
    path.write_bytes(tone_wav.read_bytes()[:44])
    _assert_audio_error(path, "no audio samples decoded")


def test_wav_cut_in_half_header(tmp_path, tone_wav):
    path = tmp_path / "half_header.wav"
    path.write_bytes(tone_wav.read_bytes()[:22])
    _assert_audio_error(path, "not a decodable audio file")


def test_video_without_audio_stream(tmp_path):
    path = helpers.write_video_without_audio(tmp_path / "mute.mp4", seconds=0.5)
    _assert_audio_error(path, "no audio stream")


def test_silent_wav(tmp_path):
    path = helpers.write_wav(tmp_path / "quiet.flac", np.zeros(16000, np.float32))
    _assert_audio_error(path, "audio is silent")


def test_silent_audio_track(tmp_path):
    src = helpers.write_wav(tmp_path / "zeros.wav", np.zeros(8000, np.float32))
    path = helpers.encode_with_ffmpeg(src, tmp_path / "zeros.mp3")
    _assert_audio_error(path, "audio is silent")


def test_non_finite_samples(tmp_path):
    x = helpers.sine(440, 0.1)
    x[10] = np.nan
    path = helpers.write_wav(tmp_path / "nan.wav", x, subtype="FLOAT")
    _assert_audio_error(path, "NaN")


def test_sample_rates_too_low_for_speech_are_refused(tmp_path):
    """A 1 Hz file would upsample ten samples into ten seconds of a "voice"."""
    path = helpers.write_wav(tmp_path / "rate1.wav", np.array([0.5, -0.5] * 5, np.float32),
                             sample_rate=1)
    _assert_audio_error(path, "sample rate 1 Hz is under 8000 Hz")
    telephone = helpers.write_wav(tmp_path / "phone.wav", helpers.sine(440, 1.0, 8000), 8000)
    _check_tone(audio.load_audio(telephone), tolerance_samples=1)


@pytest.mark.parametrize("name", ["long.wav", "long.mkv"])  # libsndfile, then ffmpeg
def test_max_seconds_decodes_only_the_start(tmp_path, name):
    """What prediction hears of a long file: its first 6 s, the same samples as a full decode
    (a 44.1 kHz file too: the resampler sees past the cut)."""
    tone = helpers.sine(440, 20.0, sample_rate=44100) * np.linspace(0.2, 1.0, 20 * 44100)
    path = helpers.write_wav(tmp_path / "long.wav", tone, sample_rate=44100)
    if name != "long.wav":
        path = path.rename(tmp_path / name)  # a WAV by content: ffmpeg reads it
    full = audio.load_audio(path)
    start = audio.load_audio(path, max_seconds=6.0)
    assert start.shape == (6 * audio.SAMPLE_RATE,)
    np.testing.assert_allclose(start[:-200], full[:start.size - 200], atol=1e-4)
    with pytest.raises(ValueError, match="max_seconds"):
        audio.load_audio(path, max_seconds=float("nan"))


def test_device_and_fifo_are_not_media_files(tmp_path):
    """/dev/zero would be read for ever, a FIFO would block: neither is a regular file."""
    os.mkfifo(tmp_path / "pipe.wav")
    for path in (pathlib.Path("/dev/zero"), tmp_path / "pipe.wav"):
        _assert_audio_error(path, "not a regular file")
