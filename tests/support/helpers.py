"""The shared test helper: short synthetic signals and media files made at test time.

Signals are float32 NumPy arrays in [-1, 1]. Media files are written with soundfile (wav/flac/ogg)
or with the ffmpeg binary that imageio-ffmpeg ships (mp3, m4a, mp4, mkv, webm), so tests need no
fixtures on disk and no network.
"""

import functools
import glob
import os
import pathlib
import subprocess

import numpy as np
import soundfile
import tensorflow as tf

SAMPLE_RATE = 16000

# Codecs per container; video containers get a tiny grey video track (see encode_with_ffmpeg).
_AUDIO_CODECS = {
    ".mp3": ["-c:a", "libmp3lame", "-b:a", "64k"],
    ".m4a": ["-c:a", "aac", "-b:a", "64k"],
    ".aac": ["-c:a", "aac", "-b:a", "64k"],
    ".ogg": ["-c:a", "libvorbis"],
    ".opus": ["-c:a", "libopus"],
    ".flac": ["-c:a", "flac"],
    ".wav": ["-c:a", "pcm_s16le"],
    ".mp4": ["-c:a", "aac", "-b:a", "64k"],
    ".mov": ["-c:a", "aac", "-b:a", "64k"],
    ".mkv": ["-c:a", "libvorbis"],
    ".webm": ["-c:a", "libopus"],
}
_VIDEO_CODECS = {
    ".mp4": ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"],
    ".mov": ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"],
    ".mkv": ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"],
    ".webm": ["-c:v", "libvpx", "-deadline", "realtime", "-b:v", "100k"],
}
VIDEO_EXTENSIONS = frozenset(_VIDEO_CODECS)


# ----------------------------------------------------------------------------------------------
# Signals


def sine(freq_hz, seconds, sample_rate=SAMPLE_RATE, amplitude=0.5, phase=0.0):
    """A pure tone: float32 [round(seconds * sample_rate)]."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return (amplitude * np.sin(2 * np.pi * freq_hz * t + phase)).astype(np.float32)


def chirp(f0_hz, f1_hz, seconds, sample_rate=SAMPLE_RATE, amplitude=0.5):
    """A linear sweep from f0_hz to f1_hz: float32 [round(seconds * sample_rate)]."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    rate = (f1_hz - f0_hz) / seconds
    return (amplitude * np.sin(2 * np.pi * (f0_hz * t + 0.5 * rate * t**2))).astype(np.float32)


def noise(seconds, sample_rate=SAMPLE_RATE, amplitude=0.1, seed=0):
    """Deterministic Gaussian noise, clipped to [-1, 1]: float32 [round(seconds * sample_rate)]."""
    rng = np.random.default_rng(seed)
    x = amplitude * rng.standard_normal(round(seconds * sample_rate))
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def peak_frequency(waveform, sample_rate=SAMPLE_RATE):
    """Frequency in Hz of the largest FFT bin of a 1-D signal (resolution sample_rate / n)."""
    waveform = np.asarray(waveform, dtype=np.float64)
    spectrum = np.abs(np.fft.rfft(waveform * np.hanning(waveform.size)))
    return float(np.argmax(spectrum) * sample_rate / waveform.size)


# ----------------------------------------------------------------------------------------------
# Files


def write_wav(path, waveform, sample_rate=SAMPLE_RATE, subtype="PCM_16"):
    """Writes [n] (mono) or [n, channels] samples in [-1, 1]; the format follows the extension
    (.wav, .flac, .ogg; `subtype` is a soundfile subtype, e.g. "FLOAT" for a float wav).
    Returns the path as a pathlib.Path."""
    path = pathlib.Path(path)
    if path.suffix.lower() == ".ogg":
        subtype = "VORBIS"  # the only ogg subtype libsndfile writes besides OPUS
    soundfile.write(str(path), np.asarray(waveform), sample_rate, subtype=subtype)
    return path


@functools.lru_cache(maxsize=1)
def ffmpeg_exe():
    import imageio_ffmpeg  # pylint: disable=import-outside-toplevel
    return imageio_ffmpeg.get_ffmpeg_exe()


def run_ffmpeg(args):
    """Runs ffmpeg with `args` (after -y -nostdin -v error); raises RuntimeError with its stderr."""
    command = [ffmpeg_exe(), "-y", "-nostdin", "-v", "error", *map(str, args)]
    result = subprocess.run(command, capture_output=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({result.returncode}): {' '.join(command)}\n"
                           f"{result.stderr.decode(errors='replace')}")


def encode_with_ffmpeg(src_wav, dst_path, extra_args=()):
    """Encodes a wav file into `dst_path`; the container and codecs follow its extension.

    Audio-only: .mp3 (libmp3lame), .m4a/.aac (aac), .ogg (vorbis), .opus, .flac, .wav.
    Video (a 64x64 grey picture as long as the audio, plus the audio track): .mp4/.mov (h264 +
    aac), .mkv (h264 + vorbis), .webm (vp8 + opus). `extra_args` go just before the output path
    (e.g. ["-ac", "2"] or ["-ar", "44100"]). Returns dst_path as a pathlib.Path.
    """
    dst_path = pathlib.Path(dst_path)
    ext = dst_path.suffix.lower()
    if ext not in _AUDIO_CODECS:
        raise ValueError(f"encode_with_ffmpeg: no codec chosen for {ext!r}")
    args = []
    if ext in _VIDEO_CODECS:
        seconds = soundfile.info(str(src_wav)).duration
        args += ["-f", "lavfi", "-i", f"color=c=gray:s=64x64:d={seconds:.3f}"]
    args += ["-i", src_wav]
    if ext in _VIDEO_CODECS:
        args += ["-map", "0:v:0", "-map", "1:a:0", *_VIDEO_CODECS[ext], "-shortest"]
    args += [*_AUDIO_CODECS[ext], *extra_args, dst_path]
    run_ffmpeg(args)
    return dst_path


def write_video_without_audio(dst_path, seconds=1.0):
    """A video file (.mp4, .mov, .mkv or .webm) with a grey picture and no audio stream at all."""
    dst_path = pathlib.Path(dst_path)
    ext = dst_path.suffix.lower()
    if ext not in _VIDEO_CODECS:
        raise ValueError(f"write_video_without_audio: not a video extension: {ext!r}")
    run_ffmpeg(["-f", "lavfi", "-i", f"color=c=gray:s=64x64:d={seconds:.3f}",
                *_VIDEO_CODECS[ext], "-an", dst_path])
    return dst_path


def scalars(event_dir, tag):
    """[(step, value)] of a scalar summary in a TensorBoard event directory."""
    out = []
    for path in sorted(glob.glob(os.path.join(event_dir, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == tag:
                    out.append((event.step, float(tf.make_ndarray(value.tensor))))
    return sorted(out)


def summary_tags(event_dir):
    """Every summary tag written in a TensorBoard event directory."""
    tags = set()
    for path in glob.glob(os.path.join(event_dir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(v.tag for v in event.summary.value)
    return tags


def stop_with_sigterm(cmd, ready, **popen_kwargs):
    """Runs `cmd`, sends it SIGTERM once `ready(pid)` is true (or it has ended) and waits for
    it: (its exit status, its stderr)."""
    import signal  # pylint: disable=import-outside-toplevel
    import time  # pylint: disable=import-outside-toplevel
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **popen_kwargs)
    try:
        while proc.poll() is None and not ready(proc.pid):
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    return proc.returncode, stderr
