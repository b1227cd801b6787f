"""The downloader's two outside tools, yt-dlp and ffmpeg, and what their failures mean.

Every failed row of `speech2face.datasets.real.download` gets one reason of `REASONS`; the
transient ones (`TRANSIENT`) are retried with backoff, and retried again by a rerun; the others
are final, and a rerun skips them unless told to retry them (docs/data.md, "Getting the data").
"""

import http.client
import os
import re
import shutil
import socket
import urllib.error
import urllib.request
from typing import Dict, List, Optional, Tuple

NOT_FOUND = "not_found"
PRIVATE = "private"
UNAVAILABLE = "unavailable"
AGE_RESTRICTED = "age_restricted"
NO_FORMAT = "no_format"
NO_AUDIO = "no_audio"
NO_VIDEO = "no_video"
TOO_SHORT = "too_short"
TIMEOUT = "timeout"
RATE_LIMITED = "rate_limited"
NETWORK = "network"
TRUNCATED = "truncated"
DOWNLOAD_ERROR = "download_error"
FFMPEG_ERROR = "ffmpeg_error"

REASONS = {
    NOT_FOUND: "the server has no such video (HTTP 404)",
    PRIVATE: "the video is private",
    UNAVAILABLE: "the video was removed, blocked or its account closed",
    AGE_RESTRICTED: "the video needs a signed-in, age-verified account",
    NO_FORMAT: "no format of the video has both video and audio",
    NO_AUDIO: "the video or the cut has no audio stream",
    NO_VIDEO: "the video or the cut has no video stream",
    TOO_SHORT: "the video ends before the segment does",
    TIMEOUT: "the page or the cut took longer than --timeout_seconds",
    RATE_LIMITED: "the server asks to slow down (HTTP 429, bot check): lower --rate_limit",
    NETWORK: "a connection failed or the server erred (HTTP 5xx)",
    TRUNCATED: "the transfer ended early: the media is cut off or does not decode",
    DOWNLOAD_ERROR: "yt-dlp failed in another way (the detail says how)",
    FFMPEG_ERROR: "ffmpeg failed in another way (the detail says how)",
}
TRANSIENT = frozenset({TIMEOUT, RATE_LIMITED, NETWORK, TRUNCATED, DOWNLOAD_ERROR, FFMPEG_ERROR})

# First match wins: (reason, pattern in the lower-cased message).
_YT_DLP = [
    (PRIVATE, r"private video"),
    (NOT_FOUND, r"http error 404|404: not found"),
    (RATE_LIMITED, r"http error 429|too many requests|not a bot"),
    (AGE_RESTRICTED, r"confirm your age|age-restricted|inappropriate for some users"),
    (UNAVAILABLE, r"video unavailable|not available|been removed|terminated|copyright|blocked"),
    (NO_FORMAT, r"requested format is not available"),
    (TIMEOUT, r"timed out|timeout"),
    (NETWORK, r"http error 5\d\d|connection|unable to download|network|temporary failure"),
]
_FFMPEG = [
    (NOT_FOUND, r"server returned 404"),
    (RATE_LIMITED, r"server returned 429"),
    (TIMEOUT, r"timed out|timeout"),
    (NETWORK, r"server returned 5\d\d|server returned 403|connection refused|connection reset|"
              r"i/o error"),
    (TRUNCATED, r"stream ends prematurely|partial file|moov atom not found|invalid data found|"
                r"end of file"),
]
_NO_STREAM = re.compile(r"stream map '\d+:(a|v)\S*' matches no streams")


class Failure(Exception):
    """A row that could not be fetched: `reason` (a key of REASONS) and what the tool said."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.attempts = reason, detail, 1

    @property
    def transient(self) -> bool:
        return self.reason in TRANSIENT


def _classify(message: str, table, default: str) -> str:
    low = message.lower()
    return next((reason for reason, pattern in table if re.search(pattern, low)), default)


def _last_lines(text: str, n: int = 3) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-n:]) or "no message"


def ffmpeg_failure(stderr: str) -> Failure:
    """The Failure an ffmpeg cut's error output says."""
    missing = _NO_STREAM.search(stderr.lower())
    if missing:
        return Failure(NO_AUDIO if missing.group(1) == "a" else NO_VIDEO, _last_lines(stderr))
    return Failure(_classify(stderr, _FFMPEG, FFMPEG_ERROR), _last_lines(stderr))


# ----------------------------------------------------------------------------------------------
# yt-dlp


def import_yt_dlp():
    """The yt_dlp module; ImportError with the fix when the extra is not installed."""
    try:
        import yt_dlp  # pylint: disable=import-outside-toplevel
    except ImportError as e:
        raise ImportError("the downloader needs yt-dlp: pip install 'speech2face[download]' "
                          f"(or pip install yt-dlp) ({e})") from None
    return yt_dlp


class _Silent:
    """yt-dlp's logger: its messages end up in the failures (Failure.detail), not on stderr."""

    def debug(self, msg):
        del msg

    info = warning = error = debug


def format_spec(max_height: int) -> str:
    """yt-dlp format: the best video of at most `max_height` lines plus the best audio, else
    the best single file that small, else the smallest there is (the cut scales it down)."""
    h = int(max_height)
    return f"bv*[height<=?{h}]+ba/b[height<=?{h}]/wv*+ba/w"


def youtube_dl(max_height: int, timeout_seconds: float):
    """A YoutubeDL that only resolves URLs: the downloader never lets it download."""
    yt_dlp = import_yt_dlp()
    return yt_dlp.YoutubeDL({
        "format": format_spec(max_height), "quiet": True, "no_warnings": True,
        "noprogress": True, "noplaylist": True, "socket_timeout": timeout_seconds,
        "extractor_retries": 0, "logger": _Silent()})


def resolve(ydl, url: str) -> List[Tuple[str, Optional[Dict[str, str]]]]:
    """The media URLs (with their HTTP headers) of the chosen format: [video + audio] or
    [video and audio in one], so that ffmpeg can read only the segment from them."""
    yt_dlp = import_yt_dlp()
    try:
        info = ydl.extract_info(url, download=False)
    except yt_dlp.utils.YoutubeDLError as e:
        message = str(e).replace("ERROR: ", "", 1)
        raise Failure(_classify(message, _YT_DLP, DOWNLOAD_ERROR), message) from None
    if info.get("_type", "video") != "video":
        raise Failure(NO_FORMAT, f"{url} is a {info.get('_type')}, not one video")
    formats = info.get("requested_formats") or [info]
    if not all(f.get("url") for f in formats):
        raise Failure(NO_FORMAT, f"yt-dlp gave no media URL for {url}")
    if any(f.get("acodec") == "none" for f in formats) and len(formats) == 1:
        raise Failure(NO_AUDIO, f"the only format of {url} small enough has no audio")
    return [(f["url"], f.get("http_headers")) for f in formats]


# ----------------------------------------------------------------------------------------------
# Servers that ignore range requests (a plain static file server, not YouTube)


def ranges_supported(url: str, headers: Optional[Dict[str, str]], timeout: float) -> bool:
    """Whether the server answers a one-byte range request with 206; on any error True, so
    that the ranged cut runs and reports that error as it is."""
    request = urllib.request.Request(url, headers={**(headers or {}), "Range": "bytes=0-0"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status == 206
    except (urllib.error.URLError, http.client.HTTPException, OSError):
        return True


def fetch_whole(url: str, headers: Optional[Dict[str, str]], path: str, timeout: float) -> None:
    """Downloads all of `url` to `path` (Failure when it fails or ends short)."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, \
                open(path, "wb") as f:
            expected = response.headers.get("Content-Length")
            shutil.copyfileobj(response, f, 1 << 20)
    except urllib.error.HTTPError as e:
        raise Failure(NOT_FOUND if e.code == 404 else NETWORK, f"{url}: HTTP {e.code}") from None
    except (socket.timeout, TimeoutError):
        raise Failure(TIMEOUT, f"{url}: no data for {timeout:.0f} s") from None
    except http.client.IncompleteRead as e:
        raise Failure(TRUNCATED, f"{url}: the transfer ended early ({e})") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        raise Failure(NETWORK, f"{url}: {e}") from None
    if expected and os.path.getsize(path) != int(expected):
        raise Failure(TRUNCATED, f"{url}: {os.path.getsize(path)} of {expected} bytes")
