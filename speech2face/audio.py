"""Audio front end (docs/data.md): decode any media file to 16 kHz mono, fit it to 6 s, and turn it
into the power-law compressed complex spectrogram `[frames, 257, 2]` the voice encoder reads.

Pure functions only. `spectrogram` is the TensorFlow op used in input pipelines and models;
`spectrogram_np` is its NumPy twin (used offline and as the reference in tests).
"""

import functools
import logging
import os
import subprocess

import numpy as np
import scipy.signal
import soundfile
import soxr
import tensorflow as tf

from speech2face import media

SAMPLE_RATE = 16000  # Hz
SEGMENT_SECONDS = 6.0
SEGMENT_SAMPLES = 96000  # SEGMENT_SECONDS * SAMPLE_RATE
WINDOW_LENGTH = 400  # samples: 25 ms at 16 kHz
HOP_LENGTH = 160  # samples: 10 ms at 16 kHz
FFT_LENGTH = 512
NUM_FREQ_BINS = 257  # FFT_LENGTH // 2 + 1
POWER = 0.3  # power-law exponent, applied to the real and imaginary parts separately

# A peak below this counts as digital silence. It sits under one 16-bit LSB (3.05e-5), so any
# integer-PCM file with a single non-zero sample passes; all-zero input (which would give an
# all-zero spectrogram and a useless training example) does not.
SILENCE_PEAK = 1e-5

# Float PCM lies in [-1, 1]; real float files overshoot it a little (intersample peaks,
# resampling), never by this much: above it the samples are not float-scaled audio (integer
# values stored as float, or garbage), and a face drawn from them would be noise.
MAX_PEAK = 2.0

# Below this source rate a file cannot hold speech (its band ends under 4 kHz; telephone audio
# is 8 kHz): `load_audio` refuses it rather than upsample a few samples into a "voice".
MIN_SOURCE_RATE = 8000  # Hz

# libsndfile decodes these directly (no subprocess); anything else, or anything libsndfile
# rejects, goes through ffmpeg.
_SOUNDFILE_EXTENSIONS = frozenset({".wav", ".wave", ".flac", ".ogg", ".oga", ".aif", ".aiff"})

_log = logging.getLogger(__name__)


class AudioError(ValueError):
    """A media file that cannot give usable audio. The message starts with the file path."""


# ----------------------------------------------------------------------------------------------
# Decoding


def load_audio(path, sample_rate=SAMPLE_RATE, max_seconds=None):
    """Decodes a media file to mono float32 at `sample_rate` Hz.

    Args:
      path: str or os.PathLike; wav/flac/ogg/aiff go through libsndfile, everything else
        (mp3, m4a/aac, the audio track of mp4/mkv/webm/mov, ...) through the ffmpeg binary of
        imageio-ffmpeg.
      sample_rate: output rate in Hz.
      max_seconds: decode only the file's first `max_seconds` (None: all of it), so that a
        caller that hears only the start (prediction: the first 6 s) does not decode, or hold
        in memory, an hour of video.

    Returns:
      np.ndarray float32 [n], samples in [-1, 1] (channels averaged).

    Raises:
      AudioError (a ValueError): missing, empty, undecodable or truncated file, no audio stream,
        a source rate under `MIN_SOURCE_RATE`, no samples decoded, non-finite samples,
        all-silent audio, or (float files) samples past `MAX_PEAK`. The message names the file.
    """
    path = os.fspath(path)
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    if max_seconds is not None and not 0 < max_seconds < float("inf"):
        raise ValueError(f"max_seconds must be positive and finite, got {max_seconds!r}")
    if not os.path.exists(path):
        raise AudioError(f"{path}: file not found")
    if os.path.isdir(path):
        raise AudioError(f"{path}: is a directory, not a media file")
    if not os.path.isfile(path):  # /dev/zero, a FIFO: reading would block or never end
        raise AudioError(f"{path}: not a regular file")
    size = os.path.getsize(path)
    if size == 0:
        raise AudioError(f"{path}: file is empty (0 bytes)")

    waveform = None
    if os.path.splitext(path)[1].lower() in _SOUNDFILE_EXTENSIONS:
        waveform = _load_with_soundfile(path, sample_rate, max_seconds)
    if waveform is None:
        waveform = _load_with_ffmpeg(path, sample_rate, max_seconds)
    if max_seconds is not None:  # both decode a little more, for the resampler's edge
        waveform = waveform[:int(round(max_seconds * sample_rate))]

    if waveform.size == 0:
        raise AudioError(f"{path}: no audio samples decoded ({size} bytes; truncated file or "
                         "empty audio stream?)")
    if not np.all(np.isfinite(waveform)):
        raise AudioError(f"{path}: audio contains NaN or infinite samples")
    peak = float(np.max(np.abs(waveform)))
    if peak < SILENCE_PEAK:
        raise AudioError(f"{path}: audio is silent (peak amplitude {peak:.3g} < {SILENCE_PEAK:g})")
    return check_peak(waveform, path, peak)


def check_peak(waveform, name, peak=None):
    """`waveform` if its peak amplitude is at most `MAX_PEAK`; else `AudioError` naming `name`
    and the peak: float PCM lies in [-1, 1], so such samples are not audio as decoded."""
    peak = float(np.max(np.abs(waveform))) if peak is None else peak
    if peak > MAX_PEAK:
        raise AudioError(f"{name}: samples reach ±{peak:.4g}, but float PCM lies in [-1, 1] "
                         f"(more than {MAX_PEAK:g} is not audio scaled as floats: integer "
                         "samples stored as float, or garbage); rescale it to [-1, 1]")
    return waveform


# Decoded past `max_seconds`, so that the resampler's filter sees the samples after the cut.
_EDGE_SECONDS = 0.1


def _load_with_soundfile(path, sample_rate, max_seconds=None):
    """The fast path. Returns None (so the caller falls back to ffmpeg) when libsndfile fails or
    decodes nothing: a header-only or odd-codec file may still be readable by ffmpeg, and if it is
    not, ffmpeg's error message is the one worth showing."""
    try:
        with soundfile.SoundFile(path) as f:
            source_rate = f.samplerate
            if source_rate < MIN_SOURCE_RATE:
                raise AudioError(f"{path}: sample rate {source_rate} Hz is under "
                                 f"{MIN_SOURCE_RATE} Hz, too low to hold speech")
            frames = -1 if max_seconds is None else int(
                np.ceil((max_seconds + _EDGE_SECONDS) * source_rate))
            data = f.read(frames, dtype="float32", always_2d=True)
    except (RuntimeError, ValueError, OSError, EOFError) as e:
        if isinstance(e, AudioError):
            raise
        _log.debug("soundfile could not read %s (%s); trying ffmpeg", path, e)
        return None
    if data.shape[0] == 0:
        return None
    waveform = data.mean(axis=1, dtype=np.float32)
    if source_rate != sample_rate:
        # soxr is deterministic and is what librosa.resample uses by default ("soxr_hq").
        waveform = soxr.resample(waveform, source_rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(waveform, dtype=np.float32)


def _load_with_ffmpeg(path, sample_rate, max_seconds=None):
    """Decodes the first audio stream to little-endian float32 mono at `sample_rate` via a pipe;
    ffmpeg does the down-mix and the resampling."""
    limit = [] if max_seconds is None else ["-t", f"{max_seconds + _EDGE_SECONDS:g}"]
    command = [
        media.ffmpeg_exe(), "-nostdin", "-v", "error",
        # "file:" keeps a path with a colon in it from being read as a protocol ("a:b.wav").
        "-i", "file:" + os.path.abspath(path),
        "-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(sample_rate), *limit, "-f", "f32le", "-",
    ]
    try:
        result = subprocess.run(command, capture_output=True, check=False)
    except OSError as e:
        raise RuntimeError(f"{path}: could not run ffmpeg ({command[0]}): {e}") from e
    stderr = result.stderr.decode("utf-8", errors="replace")
    usable = len(result.stdout) // 4 * 4  # a killed decoder may leave a partial sample
    # astype makes a writable copy (frombuffer's view of the bytes is read-only).
    waveform = np.frombuffer(result.stdout[:usable], dtype="<f4").astype(np.float32)

    if result.returncode != 0 and waveform.size == 0:
        if "matches no streams" in stderr or "does not contain any stream" in stderr:
            raise AudioError(f"{path}: no audio stream")
        raise AudioError(f"{path}: not a decodable audio file (ffmpeg: {_last_line(stderr)})")
    if result.returncode != 0 or stderr.strip():
        # Truncated or partly corrupt files: keep what decoded (a few lost frames do not matter
        # for a 6 s crop) but leave a trace.
        _log.warning("%s: ffmpeg reported problems, using the %d samples it decoded: %s",
                     path, waveform.size, _last_line(stderr))
    return waveform


def _last_line(text):
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no error message"


# ----------------------------------------------------------------------------------------------
# Fixed-length segments


def fit_to_length(waveform, num_samples, offset=0):
    """Tiles or crops the last axis to exactly `num_samples` (docs/data.md).

    A clip shorter than `num_samples` is repeated end to end until it is long enough, then cut
    (so [1, 2, 3] fitted to 7 is [1, 2, 3, 1, 2, 3, 1]); `offset` must then be 0. A longer clip
    is cropped to `waveform[..., offset:offset + num_samples]`: pass `random_offset(...)` in
    training and a fixed offset (0, the default) for evaluation.

    Args:
      waveform: array-like [..., n], n >= 1.
      num_samples: target length, e.g. SEGMENT_SAMPLES.
      offset: crop start, 0 <= offset <= max(n - num_samples, 0).

    Returns:
      np.ndarray [..., num_samples] with the input's dtype.
    """
    waveform = np.asarray(waveform)
    if waveform.ndim == 0:
        raise ValueError("fit_to_length needs an array of shape [..., n], got a scalar")
    n = waveform.shape[-1]
    if n == 0:
        raise ValueError("fit_to_length cannot fill a segment from an empty waveform")
    if num_samples <= 0:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    max_offset = max(n - num_samples, 0)
    if not 0 <= offset <= max_offset:
        raise ValueError(f"offset must be in [0, {max_offset}] for {n} samples fitted to "
                         f"{num_samples}, got {offset}")
    if n < num_samples:
        repeats = -(-num_samples // n)  # ceil
        waveform = np.tile(waveform, (1,) * (waveform.ndim - 1) + (repeats,))
    return waveform[..., offset:offset + num_samples]


def random_offset(n, num_samples, rng):
    """A uniform crop start for `fit_to_length`: an int in [0, n - num_samples], or 0 when the
    clip is not longer than `num_samples`. `rng` is a np.random.Generator."""
    if n <= num_samples:
        return 0
    return int(rng.integers(0, n - num_samples + 1))


# ----------------------------------------------------------------------------------------------
# Spectrogram
#
# Frames are taken from the raw signal, without centering or padding, so that
# frames = 1 + (n - 400) // 160 (598 for 6 s). Not librosa.stft: it frames by n_fft (512) rather
# than by the window, so center=True pads and gives 601 frames and center=False gives 597.


def num_frames(num_samples):
    """Number of STFT frames for `num_samples` samples (598 for 96,000; 298 for 48,000)."""
    if num_samples < WINDOW_LENGTH:
        raise ValueError(f"a spectrogram needs at least {WINDOW_LENGTH} samples, got {num_samples}")
    return 1 + (num_samples - WINDOW_LENGTH) // HOP_LENGTH


def spectrogram(waveform):
    """Power-law compressed complex STFT, in TensorFlow (graph-, GPU- and batch-friendly).

    Args:
      waveform: float Tensor or array [..., n], n >= 400, samples at 16 kHz.

    Returns:
      float32 Tensor [..., frames, 257, 2], frames = 1 + (n - 400) // 160; channel 0 is
      sgn(Re S)·|Re S|^0.3 and channel 1 is sgn(Im S)·|Im S|^0.3.
    """
    waveform = tf.convert_to_tensor(waveform)
    if waveform.dtype != tf.float32:
        waveform = tf.cast(waveform, tf.float32)
    n = waveform.shape[-1] if waveform.shape.rank else None
    if n is not None:
        num_frames(n)  # a clear error instead of an empty frame axis
    stft = tf.signal.stft(waveform, frame_length=WINDOW_LENGTH, frame_step=HOP_LENGTH,
                          fft_length=FFT_LENGTH, window_fn=tf.signal.hann_window,  # periodic
                          pad_end=False)
    # Real and imaginary parts stacked on a new first axis and compressed together, then moved
    # last in one transpose: TensorFlow's CPU stack along a new last axis (an element-wise
    # interleave) cost more than the STFT itself (docs/performance.md).
    parts = _power_law(tf.stack([tf.math.real(stft), tf.math.imag(stft)]))
    rank = parts.shape.rank
    perm = (list(range(1, rank)) + [0] if rank is not None
            else tf.concat([tf.range(1, tf.rank(parts)), [0]], axis=0))
    return tf.transpose(parts, perm)


# Below this magnitude `_power_law` uses x·_TINY^(POWER - 1) instead of sgn(x)·|x|^POWER: both
# are under 1e-9 there, far below what float32 STFTs resolve, and x = 0 gives exactly 0 with a
# finite gradient.
_TINY = 1e-30


def _power_law(x):
    # sgn(x)·|x|^0.3 written x·exp(-0.7·log|x|): not pow (TensorFlow's CPU pow kernel is scalar
    # code), and no sign and no selects, which were most of the cost of the form that kept 0
    # exact with them: the spectrogram of a batch of 8 six-second crops takes 15 instead of
    # 22 ms (docs/performance.md). It agrees with pow to float32 rounding.
    return x * tf.exp((POWER - 1.0) * tf.math.log(tf.maximum(tf.abs(x), _TINY)))


@functools.lru_cache(maxsize=1)
def _hann_window_np():
    # fftbins=True is the periodic Hann window, the same as tf.signal.hann_window(periodic=True).
    return scipy.signal.get_window("hann", WINDOW_LENGTH, fftbins=True)


def spectrogram_np(waveform):
    """NumPy twin of `spectrogram`: float array [..., n] -> float32 [..., frames, 257, 2].

    Computed in float64 and rounded once at the end, so it is the more accurate of the two.
    """
    waveform = np.asarray(waveform, dtype=np.float64)
    num_frames(waveform.shape[-1])
    # [..., windows, 400] view (no copy), then every 160th window.
    frames = np.lib.stride_tricks.sliding_window_view(waveform, WINDOW_LENGTH, axis=-1)
    frames = frames[..., ::HOP_LENGTH, :]
    stft = np.fft.rfft(frames * _hann_window_np(), n=FFT_LENGTH, axis=-1)  # zero-pads to 512
    compressed = [np.sign(part) * np.abs(part) ** POWER for part in (stft.real, stft.imag)]
    return np.stack(compressed, axis=-1).astype(np.float32)
