"""Real media made at test time for the dataset builder: videos of a real face with a voice.

The face is the astronaut photo shipped with scikit-image (`skimage.data.astronaut()`, Eileen
Collins, 512×512); the voice comes from the toy world's source-filter synthesiser; the "no face"
picture is scikit-image's coffee cup. Videos are H.264 + AAC mp4 files written by the ffmpeg of
imageio-ffmpeg (see tests/support/helpers.py), at a low frame rate so they encode in well under a second.
"""

import pathlib

import numpy as np
from PIL import Image

from speech2face.datasets.toy import speakers as toy_speakers, voice as toy_voice
from tests.support import helpers

# Where the astronaut's face sits in skimage.data.astronaut() (dlib CNN box, x0, y0, x1, y1).
ASTRONAUT_FACE_BOX = (168, 69, 263, 164)


def astronaut() -> np.ndarray:
    from skimage import data  # pylint: disable=import-outside-toplevel
    return np.ascontiguousarray(data.astronaut())


def face_frame() -> np.ndarray:
    """uint8 [320, 320, 3]: the astronaut's head and shoulders, face ~95 px (findable by the CNN
    detector without upsampling), face centre near (0.45, 0.36) of the frame."""
    return np.ascontiguousarray(astronaut()[0:320, 40:360])


def two_face_frame() -> np.ndarray:
    """uint8 [320, 640, 3]: the face on the left as it is, and on the right mirrored with its red
    and blue channels swapped, so which face a crop came from shows in its colours
    (see `is_blue_face`)."""
    left = face_frame()
    right = left[:, ::-1, ::-1]
    return np.ascontiguousarray(np.concatenate([left, right], axis=1))


def is_blue_face(crop: np.ndarray) -> bool:
    """True for a crop of the channel-swapped (right) face of `two_face_frame`."""
    mean = crop.reshape(-1, 3).mean(axis=0)
    return bool(mean[2] > mean[0])


def small_face_frame(size: int = 200) -> np.ndarray:
    """The whole astronaut photo shrunk to `size` px: a face of about size * 0.19 px."""
    return np.asarray(Image.fromarray(astronaut()).resize((size, size), Image.Resampling.LANCZOS))


def no_face_frame() -> np.ndarray:
    """uint8 [240, 320, 3]: a real photo without a face (scikit-image's coffee cup)."""
    from skimage import data  # pylint: disable=import-outside-toplevel
    return np.asarray(Image.fromarray(data.coffee()).resize((320, 240)))


def voice(seconds: float, seed: int = 0) -> np.ndarray:
    """float32 [seconds * 16000]: a synthetic speaker talking (toy world's synthesiser)."""
    rng = np.random.default_rng(seed)
    speaker = toy_speakers.sample_speakers(1, rng)[0]
    return toy_voice.synthesize_clip(speaker, rng, seconds, helpers.SAMPLE_RATE)


def write_image(path, frame: np.ndarray) -> pathlib.Path:
    path = pathlib.Path(path)
    Image.fromarray(frame).save(path)
    return path


def write_talking_video(path, frame: np.ndarray, waveform: np.ndarray, fps: int = 5,
                        faststart: bool = False) -> pathlib.Path:
    """An mp4/mkv showing `frame` for as long as `waveform` (16 kHz mono float) plays.

    `faststart` moves the mp4 index to the front, so that a truncated copy still opens (its
    header promises more than the file holds) instead of failing at once.
    """
    path = pathlib.Path(path)
    still = write_image(path.with_name(path.stem + "_frame.png"), frame)
    wav = helpers.write_wav(path.with_name(path.stem + "_voice.wav"), waveform)
    seconds = len(waveform) / helpers.SAMPLE_RATE
    args = ["-loop", "1", "-framerate", fps, "-t", f"{seconds:.3f}", "-i", still, "-i", wav,
            "-map", "0:v:0", "-map", "1:a:0", "-c:v", "libx264", "-preset", "ultrafast",
            "-tune", "stillimage", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k",
            "-shortest"]
    if faststart and path.suffix == ".mp4":
        args += ["-movflags", "+faststart"]
    helpers.run_ffmpeg(args + [path])
    still.unlink()
    wav.unlink()
    return path


def write_corrupt_file(path, num_bytes: int = 20000, seed: int = 0) -> pathlib.Path:
    """Random bytes under a media file name."""
    path = pathlib.Path(path)
    path.write_bytes(np.random.default_rng(seed).bytes(num_bytes))
    return path


def write_truncated_copy(src, dst, fraction: float = 0.5) -> pathlib.Path:
    """The first `fraction` of a file's bytes: a download cut off part-way."""
    data = pathlib.Path(src).read_bytes()
    dst = pathlib.Path(dst)
    dst.write_bytes(data[:int(len(data) * fraction)])
    return dst
