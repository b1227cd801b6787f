"""One manifest item -> everything of its Example but the face feature. No Beam here.

    probe_media           ffmpeg (imageio-ffmpeg): duration, audio and video streams
    _read_segment         the segment's audio at 16 kHz mono, checked: outside the media, too
                          short, truncated, silent
    _face_in_video        frames around the segment's middle -> dlib face (speech2face.datasets.real.faces)
    prepare_clip          -> Prepared: spectrogram, int16 waveform, face JPEG, 68 landmarks

Every reason a clip cannot become an example is a `manifests.SkipClip` naming the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import subprocess
import tempfile
from typing import TYPE_CHECKING, Optional

import numpy as np
import tensorflow as tf

from speech2face.datasets.real import faces, manifests
from speech2face.datasets.real.manifests import Reason, SkipClip
from speech2face import audio, media, records

if TYPE_CHECKING:  # the builder's config; only its clip fields are read here
    from speech2face.datasets.real.config import BuildConfig

SEGMENT_TOLERANCE = 0.5  # s a segment may run past the media end (rounding in manifests)

_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_STREAM = re.compile(r"Stream #\d+:\d+\S*: (Audio|Video): (.*)")
_AUDIO_RATE = re.compile(r", (\d+) Hz\b")


@dataclasses.dataclass(frozen=True)
class MediaInfo:
    duration: Optional[float]  # seconds; None if the container does not say
    has_audio: bool
    has_video: bool
    audio_rate: Optional[int] = None  # Hz of the first audio stream; None if ffmpeg does not say


def probe_media(path: str) -> MediaInfo:
    """Duration and streams of a media file; SkipClip(UNREADABLE_MEDIA) if ffmpeg cannot open it."""
    command = [media.ffmpeg_exe(), "-hide_banner", "-nostdin", "-i",
               "file:" + os.path.abspath(path)]
    stderr = subprocess.run(command, capture_output=True, check=False).stderr.decode(
        "utf-8", errors="replace")
    if "Input #0" not in stderr:
        lines = [line for line in stderr.splitlines()
                 if line.strip() and "output file" not in line]
        raise SkipClip(Reason.UNREADABLE_MEDIA, f"{path}: ffmpeg cannot open it "
                       f"({lines[-1].strip() if lines else 'no message'})")
    match = _DURATION.search(stderr)
    duration = None
    if match:
        h, m, s = match.groups()
        duration = int(h) * 3600 + int(m) * 60 + float(s)
    streams = _STREAM.findall(stderr)
    rates = [_AUDIO_RATE.search(rest) for kind, rest in streams if kind == "Audio"]
    return MediaInfo(duration=duration, has_audio=bool(rates),
                     has_video=any(kind == "Video" and "attached pic" not in rest
                                   for kind, rest in streams),
                     audio_rate=int(rates[0].group(1)) if rates and rates[0] else None)


def decode_audio_segment(path: str, start: float, seconds: Optional[float]):
    """Decodes [start, start + seconds) (to the end if seconds is None) to mono 16 kHz.

    Returns:
      (float32 [n] waveform, ffmpeg's error output: "" for a clean decode; a truncated file
      decodes part-way and says "partial file" or similar here).
    """
    command = [media.ffmpeg_exe(), "-nostdin", "-v", "error"]
    if start > 0:
        command += ["-ss", f"{start:.3f}"]  # before -i: seek, then decode from there (fast)
    command += ["-i", "file:" + os.path.abspath(path)]
    if seconds is not None:
        command += ["-t", f"{seconds:.3f}"]
    command += ["-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(audio.SAMPLE_RATE), "-f", "f32le",
                "-"]
    result = subprocess.run(command, capture_output=True, check=False)
    stderr = result.stderr.decode("utf-8", errors="replace").strip()
    usable = len(result.stdout) // 4 * 4  # a decoder cut off mid-sample
    waveform = np.frombuffer(result.stdout[:usable], "<f4").astype(np.float32)
    if result.returncode != 0 and waveform.size == 0:
        raise SkipClip(Reason.UNREADABLE_MEDIA,
                       f"{path}: audio does not decode ({faces.last_line(stderr)})")
    return waveform, stderr


@contextlib.contextmanager
def _local_copy(path: str):
    """A local path for `path`: itself, or a temporary copy of a remote (gs://...) file, since
    ffmpeg, PIL and dlib read local files only."""
    if "://" not in path:
        yield path
        return
    directory = tempfile.mkdtemp(prefix="s2f_media_")
    local = os.path.join(directory, os.path.basename(path))
    try:
        tf.io.gfile.copy(path, local, overwrite=True)
        yield local
    except SkipClip as e:  # name the file the user knows, not the temporary copy
        raise type(e)(e.reason, str(e).replace(local, path)) from None
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# One clip: audio segment and face


@dataclasses.dataclass
class Prepared:
    """A clip ready for VGG-Face: everything of its Example but the face feature.

    Attributes:
      clip: the manifest item.
      spectrogram: [598, 257, 2] in the storage dtype, of the first 6 s (tiled if shorter);
        None for the waveform_int16 layout.
      waveform: int16 [n >= 96000] 16 kHz (the clip tiled to at least 6 s), or None.
      face_jpeg: JPEG of the 224×224 RGB crop (VGG-Face sees this very image, decoded).
      landmarks: float32 [68, 2] (x, y) in crop pixels.
      frame_seconds: time of the frame the face came from (None for a still image).
    """

    clip: manifests.Clip
    spectrogram: Optional[np.ndarray]
    waveform: Optional[np.ndarray]
    face_jpeg: bytes
    landmarks: np.ndarray
    frame_seconds: Optional[float]


def _missing(path: str) -> SkipClip:
    tried = "" if os.path.splitext(path)[1] else f" (tried {', '.join(manifests.VIDEO_EXTENSIONS)})"
    return SkipClip(Reason.MISSING_MEDIA, f"{path}: file not found{tried}")


def _read_segment(path: str, info: MediaInfo, clip: manifests.Clip, config: BuildConfig):
    """The clip's audio (at most max_seconds of it): float32 [n], checked for every reason."""
    start, length = clip.start, (None if clip.end is None else clip.end - clip.start)
    if info.duration is not None:
        if start >= info.duration:
            raise SkipClip(Reason.SEGMENT_OUTSIDE_MEDIA, f"{path}: segment starts at {start:.2f} "
                           f"s, after the end of the media ({info.duration:.2f} s)")
        if clip.end is not None and clip.end > info.duration + SEGMENT_TOLERANCE:
            raise SkipClip(Reason.SEGMENT_OUTSIDE_MEDIA, f"{path}: segment ends at {clip.end:.2f}"
                           f" s, after the end of the media ({info.duration:.2f} s)")
        available = info.duration - start
        length = available if length is None else min(length, available)
    if length is not None and length < config.min_seconds:
        raise SkipClip(Reason.TOO_SHORT, f"{path}: {length:.2f} s of audio, below the minimum "
                       f"of {config.min_seconds:g} s")
    wanted = config.max_seconds if length is None else min(length, config.max_seconds)
    waveform, problems = decode_audio_segment(path, start, wanted)
    decoded = waveform.size / audio.SAMPLE_RATE
    if problems and decoded < wanted - SEGMENT_TOLERANCE:
        raise SkipClip(Reason.UNREADABLE_MEDIA, f"{path}: truncated or corrupt: decoded "
                       f"{decoded:.2f} s of {wanted:.2f} s (ffmpeg: {faces.last_line(problems)})")
    if decoded < config.min_seconds:
        raise SkipClip(Reason.TOO_SHORT, f"{path}: {decoded:.2f} s of audio decoded, below the "
                       f"minimum of {config.min_seconds:g} s")
    if not np.all(np.isfinite(waveform)):
        raise SkipClip(Reason.UNREADABLE_MEDIA, f"{path}: audio has NaN or infinite samples")
    peak = float(np.max(np.abs(waveform)))
    if peak < audio.SILENCE_PEAK:
        raise SkipClip(Reason.SILENT_AUDIO, f"{path}: the segment is silent (peak {peak:.3g})")
    return waveform


def _face_in_video(path: str, info: MediaInfo, start: float, seconds: float, hint,
                   finder: faces.FaceFinder, config: BuildConfig):
    if not info.has_video:
        raise SkipClip(Reason.NO_VIDEO_STREAM, f"{path}: no video stream")
    return finder.find_in_video(path, faces.frame_times(start, start + seconds, config.face_tries),
                                hint)


def prepare_clip(clip: manifests.Clip, finder: faces.FaceFinder, config: BuildConfig
                 ) -> Prepared:
    """Audio first (cheap, and most rejects are found there), then the face.

    Raises:
      SkipClip: with the reason the clip cannot become an example.
    """
    audio_path = manifests.resolve_media(clip.audio_path)
    if audio_path is None:
        raise _missing(clip.audio_path)
    face_in_audio_file = clip.image_path == clip.audio_path
    with _local_copy(audio_path) as local:
        info = probe_media(local)
        if not info.has_audio:
            raise SkipClip(Reason.NO_AUDIO_STREAM, f"{audio_path}: no audio stream")
        if info.audio_rate is not None and info.audio_rate < audio.MIN_SOURCE_RATE:
            # Resampled to 16 kHz it would pass as seconds of "voice" (1 Hz: ten samples).
            raise SkipClip(Reason.LOW_SAMPLE_RATE, f"{audio_path}: sample rate "
                           f"{info.audio_rate} Hz is under {audio.MIN_SOURCE_RATE} Hz, too low "
                           "to hold speech")
        waveform = _read_segment(local, info, clip, config)
        seconds = waveform.size / audio.SAMPLE_RATE
        if face_in_audio_file:
            face, frame_seconds = _face_in_video(local, info, clip.start, seconds, clip.hint,
                                                 finder, config)
    if not face_in_audio_file:
        image_path = manifests.resolve_media(clip.image_path)
        if image_path is None:
            raise _missing(clip.image_path)
        with _local_copy(image_path) as local:
            if clip.image_is_still:
                face, frame_seconds = finder.find(faces.load_image(local), clip.hint), None
            else:
                info = probe_media(local)
                seconds = info.duration or 0.0
                face, frame_seconds = _face_in_video(local, info, 0.0, seconds, clip.hint,
                                                     finder, config)

    dtype = records.spectrogram_dtype_of(config.records_layout)  # None: no spectrogram stored
    spectrogram = None if dtype is None else audio.spectrogram_np(
        audio.fit_to_length(waveform, audio.SEGMENT_SAMPLES)).astype(dtype)
    stored = None
    if config.store_waveform:
        tiled = audio.fit_to_length(waveform, max(waveform.size, audio.SEGMENT_SAMPLES))
        stored = np.round(np.clip(tiled, -1.0, 1.0) * 32767.0).astype(np.int16)
    return Prepared(clip=clip, spectrogram=spectrogram,
                    waveform=stored, face_jpeg=media.encode_jpeg(face.crop, faces.JPEG_QUALITY),
                    landmarks=face.landmarks, frame_seconds=frame_seconds)
