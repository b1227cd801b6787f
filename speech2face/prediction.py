"""Faces from speech: media files in, one predicted face image per file out.

    file ─► load_audio (16 kHz mono) ─► fit_to_length(6 s, offset 0) ─► spectrogram
         ─► voice encoder ─► v_s (4096) ─► face decoder ─► canonical face ─► PNG

Any file `audio.load_audio` reads works (wav, flac, mp3, m4a, the audio track of mp4/mkv/webm,
...). Clips of any length are fitted to the 6 s the encoder was trained on as in training and
evaluation (docs/data.md): a shorter clip is tiled, a longer one cropped to its FIRST 6 s (offset 0:
the crop the records store and evaluation scores; a centre crop would skip intros, but would
not be what the numbers in report.md describe).

Outputs (`output_paths` decides, `predict_files` writes):
  - one input and `output` a file name (face.png): that file;
  - several inputs and `output` a file name: `face_<input stem>.png` beside it, one per input,
    and `output` itself (face.png) is a contact sheet of all of them, labelled;
  - `output` an existing directory, or a name ending in "/" or without an extension: that
    directory, `<input stem>.png` per input and `contact_sheet.png` when there are several.
Equal stems (a/x.wav, b/x.mp4) are told apart by the extension, then a counter. With
`save_features`, v_s goes beside each PNG as a float32 [4096] `.npy`. The decoder's face
(64×64 for the small preset) is upsampled to `image_size` (256) for viewing; the contact sheet
shows the first 120 faces at 128 px.
"""

import math
import os
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

from absl import logging
import numpy as np
from PIL import Image

from speech2face import audio, errors
from speech2face.evaluation import figures
from speech2face.models import artifact

# Extensions a directory is searched for (files named explicitly are tried whatever theirs).
MEDIA_EXTENSIONS = frozenset({
    ".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".aif", ".aiff", ".mp3", ".m4a", ".aac",
    ".wma", ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi"})
SHEET_NAME = "contact_sheet.png"
SHEET_TILE = 128  # pixels per face on the contact sheet
SHEET_COLUMNS = 6
MAX_SHEET_FACES = 120  # the sheet shows the first ones only
MAX_IMAGE_SIZE = 4096  # pixels a side: a 100000 px face would need 30 GB of memory


class Prediction(NamedTuple):
    """One input's outcome: `output` is the PNG written, or the exception explaining why not."""

    path: str
    output: Union[str, Exception]

    @property
    def ok(self) -> bool:
        return not isinstance(self.output, Exception)


class Predictions(list):
    """The `Prediction`s of `predict_files`, in input order; `sheet` is the contact sheet
    written (several inputs, at least one face), else None."""

    sheet: Optional[str] = None


def expand_inputs(paths: Sequence[str]) -> List[Tuple[str, Optional[Exception]]]:
    """(path, None) per file as given; a directory becomes its media files (sorted, not
    recursive), or (directory, AudioError) when it holds none, reported like a bad file."""
    out = []
    for path in paths:
        path = os.fspath(path)
        if not os.path.isdir(path):
            out.append((path, None))
            continue
        found = sorted(os.path.join(path, name) for name in os.listdir(path)
                       if os.path.splitext(name)[1].lower() in MEDIA_EXTENSIONS
                       and os.path.isfile(os.path.join(path, name)))
        out.extend((f, None) for f in found)
        if not found:
            out.append((path, audio.AudioError(
                f"{path}: directory holds no audio or video files "
                f"({', '.join(sorted(MEDIA_EXTENSIONS))})")))
    return out


def check_segment(waveform: np.ndarray, path: str) -> np.ndarray:
    """`waveform` if the part the encoder hears (its first 6 s) holds at least 1 s
    (`artifact.MIN_SAMPLES`) of sound: 10 ms frames whose samples span more than digital
    silence (`audio.SILENCE_PEAK`, peak to peak: frames, not samples, so a waveform's zero
    crossings count as sound, and a constant offset does not); else `audio.AudioError` naming
    `path`: a 10 ms blip, or a file silent (or a flat DC level) for its first 6 s, would draw a
    face from no speech (the builder refuses such clips too, docs/data.md)."""
    artifact.check_length(waveform, path)
    segment = np.asarray(waveform[:audio.SEGMENT_SAMPLES])
    frame = audio.SAMPLE_RATE // 100
    padded = np.pad(segment, (0, -len(segment) % frame), mode="edge").reshape(-1, frame)
    sound = np.ptp(padded, axis=1) >= audio.SILENCE_PEAK
    # The last frame may be short: count the samples it really has.
    sizes = np.full(len(sound), frame)
    sizes[-1] = len(segment) - frame * (len(sound) - 1)
    heard = int(np.sum(sizes[sound]))
    if heard < artifact.MIN_SAMPLES:
        raise audio.AudioError(
            f"{path}: only {heard / audio.SAMPLE_RATE:.2f} s of its first "
            f"{min(len(waveform), audio.SEGMENT_SAMPLES) / audio.SAMPLE_RATE:.2f} s is sound "
            "(the rest digital silence or a constant level); a prediction needs at least "
            f"{artifact.MIN_SAMPLES / audio.SAMPLE_RATE:g} s of speech there")
    return waveform


def check_settings(output: str, image_size: int, exaggeration: float) -> None:
    """Raises ValueError (writing nothing) unless the faces can be made and written: `image_size`
    in [1, MAX_IMAGE_SIZE], `exaggeration` finite and >= -1, and `output` a file name whose
    extension is an image format PIL writes (.png, .jpg, ...) or a directory; the directory the
    images go in must be a directory, or creatable, and writable by this user."""
    if not 1 <= image_size <= MAX_IMAGE_SIZE:
        raise ValueError(f"image_size must be in [1, {MAX_IMAGE_SIZE}], got {image_size}")
    if not (math.isfinite(exaggeration) and exaggeration >= -1.0):
        raise ValueError(f"exaggeration must be a finite number >= -1, got {exaggeration}")
    if not output:
        raise ValueError("--output is empty: give a PNG file name or a directory")
    if not _is_directory_target(output) and _image_format(output) is None:
        raise ValueError(f"--output {output}: {os.path.splitext(output)[1]} is not an image "
                         "format; give a .png file name, or a directory (ending in /)")
    target = output if _is_directory_target(output) else os.path.dirname(output) or "."
    if os.path.exists(target) and not os.path.isdir(target):
        raise ValueError(f"--output {output}: {target} is a file, not a directory")
    problem = errors.unwritable_reason(target)
    if problem:
        raise ValueError(f"--output {output}: {problem}")


def _image_format(path: str) -> Optional[str]:
    """The PIL format that writes `path`'s extension (PNG for .png), or None."""
    image_format = Image.registered_extensions().get(os.path.splitext(path)[1].lower())
    return image_format if image_format in Image.SAVE else None


def _save_image(image: Image.Image, target: str) -> None:
    """Writes `target` under a temporary name of this process, then renames it: a killed run
    leaves no half image under the name of a finished one, and two runs writing one --output
    leave one of their images whole."""
    partial = f"{target}.partial-{os.getpid()}"
    image.save(partial, format=_image_format(target))
    os.replace(partial, target)


def _save_features(v_s: np.ndarray, target: str) -> None:
    partial = f"{target}.partial-{os.getpid()}"
    with open(partial, "wb") as f:
        np.save(f, v_s.astype(np.float32))
    os.replace(partial, target)


def _is_directory_target(output: str) -> bool:
    return (os.path.isdir(output) or output.endswith(("/", os.sep))
            or not os.path.splitext(output)[1])


def output_paths(inputs: Sequence[str], output: str) -> Tuple[Dict[str, str], Optional[str]]:
    """({input: PNG path}, contact sheet path or None) for the inputs; see the module docstring.
    """
    inputs = list(dict.fromkeys(inputs))
    if _is_directory_target(output):
        directory, prefix, sheet = output, "", os.path.join(output, SHEET_NAME)
    else:
        directory = os.path.dirname(output)
        stem, _ = os.path.splitext(os.path.basename(output))
        if len(inputs) == 1:
            return {inputs[0]: output}, None
        prefix, sheet = stem + "_", output
    stems = [os.path.splitext(os.path.basename(p))[0] for p in inputs]
    taken, paths = set(), {}
    for path, stem in zip(inputs, stems):
        name = prefix + stem
        ext = os.path.splitext(path)[1].lstrip(".")
        if stems.count(stem) > 1 and ext:
            name += "_" + ext  # a/x.wav, b/x.mp4 -> x_wav, x_mp4
        base, count = name, 2
        while name in taken:  # the same name and extension in two directories
            name, count = f"{base}_{count}", count + 1
        taken.add(name)
        paths[path] = os.path.join(directory, name + ".png")
    return paths, sheet if len(inputs) > 1 else None


def predict_files(model_dir: Optional[str], paths: Sequence[str], output: str,
                  save_features: bool = False, decoder_dir: Optional[str] = None,
                  image_size: int = 256, batch_size: int = 16,
                  exaggeration: float = 0.0, model: Optional[str] = None) -> Predictions:
    """Predicts a face for every media file in `paths` (directories expanded).

    Args:
      model_dir: a stage-2 run with an exported encoder (its decoder is found through it), or
        None when `model` is given.
      paths: media files and/or directories of them.
      output: a PNG file name or a directory; see the module docstring for the naming.
      save_features: also write v_s beside each PNG as `.npy` (float32 [4096]).
      decoder_dir: override of the stage-1 run that decodes the faces.
      image_size: side of the PNGs in pixels (the decoder's face is upsampled).
      batch_size: clips per encoder call.
      exaggeration: e of `FaceDecoder.exaggerate` (0: the predicted feature as it is); the saved
        features are always v_s itself.
      model: a model directory (`artifact.write_model`) instead of `model_dir`.

    Returns:
      `Predictions`: one `Prediction(path, output)` per input, in order; `output` is the PNG
      path, or the exception (an `audio.AudioError` naming the file) of an input that failed,
      the others being written regardless. `.sheet`: the contact sheet's path, or None.

    Raises (before writing anything):
      FileNotFoundError: no exported encoder or decoder. ValueError: no inputs, a bad
      `image_size` or `exaggeration`, an `output` that cannot be written, a model that does
      not load.
    """
    inputs = expand_inputs(paths)
    if not inputs:
        raise ValueError("no input files given")
    check_settings(output, image_size, exaggeration)
    try:
        predictor = artifact.load_either(model, model_dir, decoder_dir)
    except (FileNotFoundError, errors.UserError):
        raise  # their messages name the file and the fix
    except (ValueError, OSError) as e:  # a damaged model.json or .keras file
        if bool(model) == bool(model_dir) or (model and decoder_dir):
            raise  # load_either's own usage message
        raise ValueError(f"cannot load the model {model or model_dir}: {e}") from e
    outcome = {path: error for path, error in inputs if error is not None}
    targets, sheet = output_paths([p for p, error in inputs if error is None], output)
    results, tiles = Predictions(), []
    pending = list(targets)
    # A chunk at a time, each clip cut to 6 s at once: a directory of long videos stays small.
    for start in range(0, len(pending), batch_size):
        chunk, segments = [], []
        for path in pending[start:start + batch_size]:
            try:
                # Only the first 6 s are heard: an hour-long video is not decoded in full.
                waveform = check_segment(
                    audio.load_audio(path, max_seconds=audio.SEGMENT_SECONDS), path)
            except (audio.AudioError, RuntimeError) as e:
                logging.warning("%s", e)
                outcome[path] = e
                continue
            chunk.append(path)
            segments.append(audio.fit_to_length(waveform, audio.SEGMENT_SAMPLES, offset=0))
        if not chunk:
            continue
        features, faces = predictor.predict(segments, exaggeration, batch_size)
        for path, v_s, face in zip(chunk, features, faces):
            target = targets[path]
            os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
            image = Image.fromarray(face).resize((image_size, image_size), Image.LANCZOS)
            _save_image(image, target)
            if save_features:
                _save_features(v_s, os.path.splitext(target)[0] + ".npy")
            outcome[path] = target
            logging.info("%s -> %s", path, target)
            if sheet and len(tiles) < MAX_SHEET_FACES:
                tiles.append((np.asarray(image), os.path.basename(path)))
    if sheet and tiles:
        rows = [tiles[i:i + SHEET_COLUMNS] for i in range(0, len(tiles), SHEET_COLUMNS)]
        figures.image_rows([[image for image, _ in row] for row in rows], sheet, SHEET_TILE,
                           captions=[[label for _, label in row] for row in rows])
        logging.info("Contact sheet of %d faces%s: %s", len(tiles),
                     f" (the first {MAX_SHEET_FACES})" if len(tiles) == MAX_SHEET_FACES else "",
                     sheet)
        results.sheet = sheet
    results.extend(Prediction(path, outcome[path]) for path, _ in inputs)
    return results
