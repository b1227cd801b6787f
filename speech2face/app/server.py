"""The web app's ASGI application: the page, `POST /predict` and `GET /health` (docs/app.md).

    GET  /          the page (speech2face/app/page.py): record or upload, see the face
    POST /predict   multipart form, field `audio` (a file); `exaggeration` as a form field or
                    query parameter (default 0) -> image/png, the face upsampled to
                    `image_size`; a request it cannot serve -> 4xx {"error": "..."}
    GET  /health    {"status": "ok", ...the model's info}

An upload is counted as it arrives and cut off past `max_upload_bytes` (413); its bytes are
written to a temporary file, read with `audio.load_audio` (soundfile, or ffmpeg with an argument
list) and the file is deleted whatever happens. Clips under 1 s are refused, as the dataset
builder refuses them (`DatasetConfig.min_seconds`); the model fits the rest to 6 s (tiled if
shorter, the first 6 s if longer). Nothing is unpickled. Predictions run one at a time in a
worker thread, so the server keeps answering the page meanwhile.
"""

import io
import math
import os
import re
import tempfile
import threading
from typing import Optional

import numpy as np
from PIL import Image
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from speech2face import audio
from speech2face.app import page

MAX_UPLOAD_BYTES = 50 * 2**20  # 50 MiB
IMAGE_SIZE = 256  # side of the returned PNG, pixels
MIN_SECONDS = 1.0  # the dataset builder's default minimum clip length
MIN_EXAGGERATION, MAX_EXAGGERATION = -1.0, 3.0  # -1: the mean face; the paper rendered 0-1.4
FIELD = "audio"
_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,8}$")
_CHUNK = 2**20


class _TooLarge(Exception):
    """The request body passed the upload limit."""


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _megabytes(num_bytes: int) -> str:
    return f"{num_bytes / 2**20:g} MB"


def _limited(receive, limit: int):
    """`receive` that raises _TooLarge once more than `limit` body bytes have come in."""
    seen = 0

    async def wrapped():
        nonlocal seen
        message = await receive()
        if message.get("type") == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _TooLarge()
        return message

    return wrapped


def parse_exaggeration(value: Optional[str]) -> float:
    """The exaggeration e of a request (None or "" -> 0). Raises ValueError naming the problem."""
    if value is None or not str(value).strip():
        return 0.0
    try:
        e = float(value)
    except ValueError:
        raise ValueError(f"exaggeration must be a number, got {value!r}") from None
    if not math.isfinite(e) or not MIN_EXAGGERATION <= e <= MAX_EXAGGERATION:
        raise ValueError(f"exaggeration must be from {MIN_EXAGGERATION:g} to "
                         f"{MAX_EXAGGERATION:g} (the paper rendered 0, 0.7 and 1.4), got {value}")
    return e


def face_png(face: np.ndarray, size: int) -> bytes:
    """uint8 [S, S, 3] -> PNG bytes of the face upsampled to size x size (as predict.py)."""
    image = Image.fromarray(face)
    if image.size != (size, size):
        image = image.resize((size, size), Image.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _display_name(upload: UploadFile) -> str:
    name = os.path.basename((upload.filename or "").replace("\\", "/"))
    return name or "the upload"


def _suffix(name: str) -> str:
    """The upload's extension when it is plain (it picks the decoder), else none."""
    suffix = os.path.splitext(name)[1]
    return suffix.lower() if _SUFFIX.match(suffix) else ""


def _save(upload: UploadFile, path: str) -> int:
    """Copies the upload into `path`; returns the number of bytes."""
    upload.file.seek(0)
    total = 0
    with open(path, "wb") as out:
        while True:
            block = upload.file.read(_CHUNK)
            if not block:
                return total
            out.write(block)
            total += len(block)


class Predictor:
    """A model and the rules of the endpoint: one prediction at a time."""

    def __init__(self, model, image_size: int = IMAGE_SIZE):
        self.model, self.image_size = model, image_size
        self._lock = threading.Lock()

    def waveform(self, upload: UploadFile, name: str) -> np.ndarray:
        """The upload's 16 kHz mono audio. Raises audio.AudioError naming `name` and the problem."""
        handle, path = tempfile.mkstemp(prefix="speech2face-upload-", suffix=_suffix(name))
        os.close(handle)
        try:
            _save(upload, path)
            try:
                waveform = audio.load_audio(path)
            except audio.AudioError as e:
                raise audio.AudioError(str(e).replace(path, name)) from None
        finally:
            os.remove(path)
        seconds = len(waveform) / audio.SAMPLE_RATE
        if seconds < MIN_SECONDS:
            raise audio.AudioError(f"{name}: {seconds:.2f} s of audio is too short; at least "
                                   f"{MIN_SECONDS:g} s is needed (speak for a few seconds; the "
                                   f"model listens to the first {audio.SEGMENT_SECONDS:g} s)")
        return waveform

    def png(self, waveform: np.ndarray, exaggeration: float) -> bytes:
        with self._lock:
            out = self.model.predict(waveform, exaggeration=exaggeration)
        return face_png(out.face[0], self.image_size)


def model_info(model, max_upload_bytes: int, image_size: int) -> dict:
    """What GET /health tells about the model and the limits."""
    info = getattr(model, "info", None) or {}
    source = getattr(model, "source", None) or {}
    where = source.get("model") or source.get("model_dir") or ""
    return {
        "status": "ok",
        "model": os.path.basename(str(where).rstrip("/")) or None,
        "format": info.get("format"), "format_version": info.get("format_version"),
        "speech2face_version": info.get("speech2face_version"),
        "tensorflow_version": info.get("tensorflow_version"), "written": info.get("written"),
        "steps": info.get("steps") or {"encoder": source.get("step")},
        "face_size": int(model.face_size), "image_size": image_size,
        "sample_rate": audio.SAMPLE_RATE, "segment_seconds": audio.SEGMENT_SECONDS,
        "min_seconds": MIN_SECONDS, "max_upload_bytes": max_upload_bytes,
        "exaggeration": {"min": MIN_EXAGGERATION, "max": MAX_EXAGGERATION,
                         "paper": [0.0, 0.7, 1.4]},
    }


def create_app(model, max_upload_bytes: int = MAX_UPLOAD_BYTES,
               image_size: int = IMAGE_SIZE) -> Starlette:
    """The ASGI app serving `model` (a `Speech2FaceModel`: `predict(waveform, exaggeration)`
    giving `.face` uint8 [1, S, S, 3], and `face_size`)."""
    predictor = Predictor(model, image_size)
    info = model_info(model, max_upload_bytes, image_size)
    html = page.render(max_upload_bytes=max_upload_bytes, min_seconds=MIN_SECONDS,
                       segment_seconds=audio.SEGMENT_SECONDS)

    async def index(request: Request) -> Response:
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    async def health(request: Request) -> Response:
        return JSONResponse(info)

    async def predict(request: Request) -> Response:
        too_large = (f"upload too large: over the limit of {_megabytes(max_upload_bytes)} "
                     "(--max_upload_mb)")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_upload_bytes:
            return _error(413, too_large)
        limited = Request(request.scope, _limited(request.receive, max_upload_bytes))
        try:
            form = await limited.form(max_files=1, max_fields=16)
        except _TooLarge:
            return _error(413, too_large)
        except HTTPException as e:
            return _error(e.status_code, f"not a readable multipart form: {e.detail}")
        try:
            upload = form.get(FIELD)
            if upload is None:
                return _error(400, f"missing form field {FIELD!r}: send the clip as "
                                   f"multipart/form-data, e.g. curl -F {FIELD}=@clip.wav")
            if not isinstance(upload, UploadFile):
                return _error(400, f"form field {FIELD!r} must be a file upload, not text")
            raw = form.get("exaggeration")
            if raw is None:
                raw = request.query_params.get("exaggeration")
            try:
                exaggeration = parse_exaggeration(raw)
            except ValueError as e:
                return _error(400, str(e))
            name = _display_name(upload)
            try:
                waveform = await run_in_threadpool(predictor.waveform, upload, name)
            except audio.AudioError as e:
                return _error(422, f"cannot use this audio: {e}")
            data = await run_in_threadpool(predictor.png, waveform, exaggeration)
        finally:
            await form.close()
        seconds = len(waveform) / audio.SAMPLE_RATE
        return Response(data, media_type="image/png", headers={
            "Cache-Control": "no-store", "X-Audio-Seconds": f"{seconds:.2f}",
            "X-Exaggeration": f"{exaggeration:g}"})

    return Starlette(routes=[
        Route("/", index, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/predict", predict, methods=["POST"]),
    ])
