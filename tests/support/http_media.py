"""A local HTTP media server on 127.0.0.1 for the downloader's tests (no network).

It serves the files of one directory with HTTP range requests (as video hosts do, and as ffmpeg
needs to read only a segment), counts the requests and the bytes sent per path, answers 404 for
what it does not have, and can cut transfers short: for the paths in `truncate` it promises the
whole file (Content-Length) but sends only its first half, like a connection that drops.
`bytes_per_second` paces the sending, as a link of that bandwidth would.
"""

import collections
import http.server
import os
import re
import socket
import threading

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


class MediaServer:
    """`with MediaServer(root) as server:` serves root at `server.url_template` ({id}.mp4).

    Attributes:
      requests: path -> number of requests (404s included).
      bytes_sent: path -> bytes written to the socket: what the client read, plus what the
        socket buffers held when it hung up (little when `bytes_per_second` paces the sending).
    """

    def __init__(self, root, truncate=(), delay: float = 0.0, bytes_per_second: float = 0.0):
        self.root, self.truncate, self.delay = str(root), set(truncate), delay
        self.bytes_per_second = bytes_per_second  # 0: as fast as the socket takes it
        self.requests = collections.Counter()
        self.bytes_sent = collections.Counter()
        self._lock = threading.Lock()
        self._server = None
        self._thread = None

    @property
    def url_template(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/{{id}}.mp4"

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.bytes_sent.clear()

    def __enter__(self):
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                owner._serve(self)

            def log_message(self, *args):
                del args

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def server_bind(self):
                self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
                super().server_bind()

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _serve(self, handler) -> None:
        name = handler.path.split("?")[0].lstrip("/")
        with self._lock:
            self.requests[name] += 1
        if self.delay:
            threading.Event().wait(self.delay)
        path = os.path.join(self.root, name)
        if "/" in name or not os.path.isfile(path):
            handler.send_error(404)
            return
        with open(path, "rb") as f:
            data = f.read()
        first, last = 0, len(data) - 1
        match = _RANGE.match(handler.headers.get("Range", ""))
        if match and (match.group(1) or match.group(2)):
            if match.group(1):
                first = int(match.group(1))
                last = min(int(match.group(2)), last) if match.group(2) else last
            else:  # bytes=-N: the last N
                first = max(0, len(data) - int(match.group(2)))
            if first > last:
                handler.send_error(416)
                return
            handler.send_response(206)
            handler.send_header("Content-Range", f"bytes {first}-{last}/{len(data)}")
        else:
            handler.send_response(200)
        handler.send_header("Content-Type", "video/mp4")
        handler.send_header("Accept-Ranges", "bytes")
        handler.send_header("Content-Length", str(last - first + 1))
        handler.end_headers()
        body = data[first:last + 1]
        if name in self.truncate:
            body = body[:max(0, len(data) // 2 - first)]
        for i in range(0, len(body), 16384):
            try:
                handler.wfile.write(body[i:i + 16384])
            except (BrokenPipeError, ConnectionResetError):
                return
            with self._lock:
                self.bytes_sent[name] += len(body[i:i + 16384])
            if self.bytes_per_second:  # paced, the client's buffers stay nearly empty
                threading.Event().wait(len(body[i:i + 16384]) / self.bytes_per_second)
        if name in self.truncate:
            handler.close_connection = True
