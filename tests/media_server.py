"""An HTTP server on 127.0.0.1 that serves a folder's images and the answers a fetch must survive, for the fetch
tests: the only address any test talks to."""

from __future__ import annotations

import collections
import http.server
import threading
import time
import urllib.parse
from pathlib import Path

#: Seconds the slow answer waits before its first byte (the tests' timeout is shorter).
SLOW = 3.0
#: Bytes of the answers larger than the tests' size limit.
HUGE = 300_000


class MediaServer:
    """Serves ``folder`` on 127.0.0.1 (a free port), one thread per request:

    - ``/img/<name>``: the file, image/png;
    - ``/missing.png``: 404;
    - ``/flaky.png``: 500 the first time, then ``flaky.png``;
    - ``/busy.png``: 429 with Retry-After: 1 the first time, then ``busy.png``;
    - ``/slow.png``: ``slow.png`` after :data:`SLOW` seconds;
    - ``/wait/<name>``: the file after ``delay`` seconds (to see requests in flight);
    - ``/truncated.png``: half of ``truncated.png``'s bytes under its full Content-Length;
    - ``/redirect.png``: 302 to ``file:///etc/passwd``;
    - ``/huge.png``: :data:`HUGE` bytes, with a Content-Length; ``/huge-unsized.png``: as many, without;
    - ``/fake.jpg``: HTML served as image/jpeg.

    ``requests`` counts requests per path, ``times`` records when each came, ``most_in_flight`` the most
    requests it answered at once.
    """

    def __init__(self, folder: str | Path, delay: float = 0.3):
        self.folder, self.delay = Path(folder), delay
        self.requests: collections.Counter[str] = collections.Counter()
        self.times: dict[str, list[float]] = collections.defaultdict(list)
        self.in_flight = self.most_in_flight = 0
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection: a body without a length ends with it

            def log_message(self, *args):
                pass

            def do_GET(self):
                with server._lock:
                    server.requests[self.path] += 1
                    server.times[self.path].append(time.monotonic())
                    seen = server.requests[self.path]
                    server.in_flight += 1
                    server.most_in_flight = max(server.most_in_flight, server.in_flight)
                try:
                    server.answer(self, urllib.parse.unquote(self.path), seen)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout, a size limit)
                    pass
                finally:
                    with server._lock:
                        server.in_flight -= 1

        class Server(http.server.ThreadingHTTPServer):
            request_queue_size = 128  # the listen backlog: many clients connect at once

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> MediaServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def answer(self, handler: http.server.BaseHTTPRequestHandler, path: str, seen: int) -> None:
        def send(code, body=b"", headers=(), length=None):
            handler.send_response(code)
            for name, value in headers:
                handler.send_header(name, value)
            if length is not False:
                handler.send_header("Content-Length", str(len(body) if length is None else length))
            handler.end_headers()
            handler.wfile.write(body)

        def image(name):
            return (self.folder / name).read_bytes()

        png = [("Content-Type", "image/png")]
        if path.startswith("/img/"):
            send(200, image(path[5:]), png)
        elif path.startswith("/wait/"):
            time.sleep(self.delay)
            send(200, image(path[6:]), png)
        elif path == "/flaky.png":
            send(500, b"busy") if seen == 1 else send(200, image("flaky.png"), png)
        elif path == "/busy.png":
            send(429, b"slow down", [("Retry-After", "1")]) if seen == 1 else send(200, image("busy.png"), png)
        elif path == "/slow.png":
            time.sleep(SLOW)
            send(200, image("slow.png"), png)
        elif path == "/truncated.png":
            data = image("truncated.png")
            send(200, data[:len(data) // 2], png, length=len(data))
        elif path == "/redirect.png":
            send(302, headers=[("Location", "file:///etc/passwd")])
        elif path == "/huge.png":
            send(200, b"\0" * HUGE, png)
        elif path == "/huge-unsized.png":
            send(200, b"\0" * HUGE, png, length=False)
        elif path == "/fake.jpg":
            send(200, b"<html><body>not an image</body></html>", [("Content-Type", "image/jpeg")])
        else:
            send(404, b"not found")


#: The bad URLs' paths and what each one's failure reason says.
BAD = {"/missing.png": "HTTP Error 404", "/slow.png": "timed out", "/truncated.png": "truncated",
       "/redirect.png": "file:///etc/passwd", "/huge.png": "too large: Content-Length",
       "/huge-unsized.png": "too large: more than", "/fake.jpg": "not an image"}
#: The paths that fail once, then succeed (retried).
RETRIED = ("/flaky.png", "/busy.png")
