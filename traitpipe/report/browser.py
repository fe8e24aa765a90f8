"""A real browser reads the report: Debian's headless Chromium loads a local, self-contained HTML page and
says what went wrong (console errors, images that do not decode) and what it looked like (a screenshot).

Talks the Chrome DevTools Protocol over ``--remote-debugging-pipe`` (file
descriptors 3 and 4 of the browser process), so it needs only the Python
standard library and Debian's ``chromium`` package: no chromedriver, no
websocket library, no TCP port, and no network access.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import signal
import tempfile
import time
from pathlib import Path

# Order matters: the real binary first (skips the /usr/bin/chromium shell
# wrapper, which sources /etc/chromium.d/* and adds extension flags).
_CANDIDATES = (
    "/usr/lib/chromium/chromium",
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
)

_FLAGS = (
    "--headless",
    "--remote-debugging-pipe",
    "--no-sandbox",  # required when running as root (CI containers)
    "--disable-dev-shm-usage",  # docker's /dev/shm is often only 64 MB
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-component-extensions-with-background-pages",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--disable-breakpad",
    "--disable-crash-reporter",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-features=Translate,MediaRouter,OptimizationHints,"
    "AutofillServerCommunication,CertificateTransparencyComponentUpdater",
    "--no-pings",
    # self-contained pages only: no DNS at all (also stops Chromium's own
    # background requests to *.google.com); external URLs fail fast and show
    # up in ``errors`` as net::ERR_NAME_NOT_RESOLVED
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--no-proxy-server",
    "--metrics-recording-only",
    "--password-store=basic",
    "--use-mock-keychain",
    "--mute-audio",
    "--hide-scrollbars",
    "--force-color-profile=srgb",
)

_IMAGES_JS = r"""
(async () => {
  const imgs = Array.from(document.images);
  const broken = [];
  for (let i = 0; i < imgs.length; i++) {
    const img = imgs[i];
    if (img.loading === 'lazy') img.loading = 'eager';
    let why = '';
    try {
      await img.decode();
    } catch (e) {
      why = 'decode() rejected: ' + ((e && (e.name + ': ' + e.message)) || e);
    }
    if (!why && img.naturalWidth === 0) why = 'naturalWidth == 0';
    if (why) {
      const src = img.currentSrc || img.getAttribute('src') || '';
      broken.push({index: i, id: img.id || '', alt: img.alt || '',
                   src: src.length > 60 ? src.slice(0, 60) + '...' : src,
                   why: why});
    }
  }
  return {count: imgs.length, broken: broken};
})()
"""


def find_chromium() -> str | None:
    """Return the path of a Chromium/Chrome binary, or ``None`` if absent.

    Honours the ``CHROMIUM_BIN`` environment variable first.
    """
    env = os.environ.get("CHROMIUM_BIN")
    if env:
        return shutil.which(env)
    for name in _CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _remote_object_text(obj: dict) -> str:
    if "value" in obj:
        v = obj["value"]
        return v if isinstance(v, str) else json.dumps(v)
    return obj.get("description") or obj.get("unserializableValue") or obj.get("type", "?")


def _where(url: str | None, line: int | None) -> str:
    if not url:
        return ""
    if url.startswith("data:"):
        url = url[:40] + "..."
    return f" ({url}:{line + 1})" if line is not None else f" ({url})"


class _Pipe:
    """Minimal CDP client over Chromium's --remote-debugging-pipe."""

    def __init__(self, rfd: int, wfd: int, deadline: float, on_event):
        self.rfd, self.wfd = rfd, wfd
        self.deadline = deadline
        self.on_event = on_event
        self.buf = b""
        self.next_id = 0

    def _read_message(self, soft_deadline: float | None = None) -> dict | None:
        """Next message; None once ``soft_deadline`` passes (quietly)."""
        while True:
            end = self.buf.find(b"\0")
            if end >= 0:
                raw, self.buf = self.buf[:end], self.buf[end + 1 :]
                return json.loads(raw)
            now = time.monotonic()
            if soft_deadline is not None and now >= soft_deadline:
                return None
            if now >= self.deadline:
                raise TimeoutError("timed out waiting for Chromium")
            limit = self.deadline if soft_deadline is None else min(self.deadline, soft_deadline)
            if select.select([self.rfd], [], [], limit - now)[0]:
                chunk = os.read(self.rfd, 1 << 20)
                if not chunk:
                    raise RuntimeError("Chromium closed the DevTools pipe (crashed?)")
                self.buf += chunk

    def pump(self, until=None, timeout: float | None = None) -> dict | None:
        """Read messages, passing events to ``on_event``.

        Without ``timeout``: return the first message for which ``until(msg)``
        is true (any message if ``until`` is None). With ``timeout``: just
        dispatch events for that many seconds, then return None.
        """
        soft = None if timeout is None else time.monotonic() + timeout
        while True:
            msg = self._read_message(soft)
            if msg is None:
                return None
            if "method" in msg:
                self.on_event(msg)
            if soft is None and (until is None or until(msg)):
                return msg

    def post(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        """Send a command without waiting for its reply; return its id."""
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        data = json.dumps(msg).encode() + b"\0"
        try:
            while data:  # small messages; a blocking write is fine
                data = data[os.write(self.wfd, data):]
        except BrokenPipeError:
            raise RuntimeError("Chromium closed the DevTools pipe (crashed?)") from None
        return self.next_id

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send a command and wait (dispatching events) for its reply."""
        mid = self.post(method, params, session)
        reply = self.pump(lambda m: m.get("id") == mid)
        if "error" in reply:
            raise RuntimeError(f"CDP {method} failed: {reply['error']}")
        return reply.get("result", {})


def check_page(html_path, screenshot_path, timeout: float = 60, *,
               width: int = 1280, height: int = 800, settle: float = 0.25,
               chromium: str | None = None) -> dict:
    """Load a local HTML file in headless Chromium and report problems.

    Parameters
    ----------
    html_path : str or os.PathLike
        Local HTML file to open (loaded through a ``file://`` URL). It should
        be self-contained, e.g. images embedded as ``data:`` URIs.
    screenshot_path : str or os.PathLike
        Where to write a PNG screenshot of the full page (the whole
        scrollable document, not just the viewport; capped at 16384 px per
        side). Parent directories are created if needed.
    timeout : float, default 60
        Overall wall-clock limit in seconds, browser start-up included. When
        it is exceeded the browser is killed and ``TimeoutError`` is raised.
    width, height : int, default 1280, 800
        Viewport size in CSS pixels (device scale factor 1).
    settle : float, default 0.25
        Extra seconds to keep collecting console messages after the
        ``load`` event (catches errors from short timers / promises).
    chromium : str, optional
        Browser binary; defaults to :func:`find_chromium`.

    Returns
    -------
    dict
        ``errors`` : list of str
            Console errors (``console.error``/``console.assert``), uncaught
            exceptions and unhandled rejections, browser-side error log
            entries (e.g. "network: Failed to load resource:
            net::ERR_FILE_NOT_FOUND" for a missing file or an invalid
            ``data:`` URI). Empty for a clean page. Warnings and
            ``console.log`` are ignored.
        ``images`` : int
            Number of ``<img>`` elements in the document.
        ``broken_images`` : list of str
            One description per ``<img>`` whose ``decode()`` rejected or
            whose ``naturalWidth`` is 0.
        ``screenshot`` : str
            Absolute path of the PNG written.

    Raises
    ------
    FileNotFoundError
        If ``html_path`` or the browser binary does not exist.
    TimeoutError
        If the whole check takes longer than ``timeout`` seconds.
    RuntimeError
        If the browser or the page's renderer crashes, or a DevTools
        command fails.

    Notes
    -----
    The browser runs with ``--no-sandbox`` (needed as root, e.g. in CI
    containers), ``--disable-dev-shm-usage`` and a throw-away
    ``--user-data-dir`` (also used as ``HOME``), and no DNS resolution at
    all. Commands go over a pipe, so no port is opened and parallel calls
    (threads, pytest-xdist) don't interfere. The browser is started in its
    own session; at the end it is asked to close (``Browser.close``, only
    on success), then, whatever happened, its process group is SIGKILLed,
    it is reaped and the profile directory is removed. The
    ``chrome_crashpad_handler`` helpers (own process groups) exit by
    themselves when the browser goes. An ``alert()``/``confirm()``/``prompt()``
    dialog is accepted automatically so it cannot block the page.

    Examples
    --------
    >>> res = check_page("report.html", "report.png")  # doctest: +SKIP
    >>> assert not res["errors"] and not res["broken_images"]  # doctest: +SKIP
    """
    deadline = time.monotonic() + timeout
    html = Path(html_path).resolve()
    if not html.is_file():
        raise FileNotFoundError(html)
    shot = Path(screenshot_path).resolve()
    exe = chromium or find_chromium()
    if not exe or not shutil.which(exe):
        raise FileNotFoundError("chromium not found (apt-get install chromium)")
    exe = shutil.which(exe)

    errors: list[str] = []
    loaded: set[str] = set()

    def on_event(msg: dict) -> None:
        method, p = msg["method"], msg.get("params", {})
        if method == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            exc = d.get("exception") or {}
            text = exc.get("description") or d.get("text", "exception")
            kind = ("Unhandled promise rejection" if "in promise" in d.get("text", "")
                    else "Uncaught exception")
            errors.append(_short(f"{kind}: " + text.split("\n    at ")[0]
                                 + _where(d.get("url"), d.get("lineNumber"))))
        elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            args = " ".join(_remote_object_text(a) for a in p.get("args", []))
            frames = (p.get("stackTrace") or {}).get("callFrames") or [{}]
            errors.append(_short(f"console.{p['type']}: {args}"
                                 + _where(frames[0].get("url"), frames[0].get("lineNumber"))))
        elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
            e = p["entry"]
            errors.append(_short(f"{e.get('source', 'log')}: {e.get('text', '')}"
                                 + _where(e.get("url"), e.get("lineNumber"))))
        elif method == "Inspector.targetCrashed":
            raise RuntimeError("renderer crashed")
        elif method == "Page.lifecycleEvent" and p.get("name") == "load":
            loaded.add(p.get("loaderId"))
        elif method == "Page.javascriptDialogOpening":
            # alert()/confirm()/prompt() would block the page forever
            cdp.post("Page.handleJavaScriptDialog", {"accept": True}, msg.get("sessionId"))

    profile = tempfile.mkdtemp(prefix="chromium-check-")
    # pipes: browser reads commands on fd 3, writes replies/events on fd 4
    cmd_r, cmd_w = os.pipe()
    evt_r, evt_w = os.pipe()
    stderr_path = os.path.join(profile, "stderr.log")
    err_fd = os.open(stderr_path, os.O_WRONLY | os.O_CREAT, 0o600)
    env = dict(os.environ, HOME=profile, XDG_CONFIG_HOME=profile, XDG_CACHE_HOME=profile)
    argv = [exe, *_FLAGS, f"--user-data-dir={profile}",
            f"--window-size={width},{height}", "about:blank"]
    pid = None
    grace = 0.0  # seconds to wait for a voluntary exit before SIGKILL
    try:
        pid = os.posix_spawn(exe, argv, env, setsid=True, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, err_fd, 1),
            (os.POSIX_SPAWN_DUP2, err_fd, 2),
            (os.POSIX_SPAWN_DUP2, cmd_r, 3),
            (os.POSIX_SPAWN_DUP2, evt_w, 4),
        ])
        for fd in (cmd_r, evt_w, err_fd):
            os.close(fd)
        cmd_r = evt_w = err_fd = -1
        cdp = _Pipe(evt_r, cmd_w, deadline, on_event)

        target = cdp.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        sid = cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Inspector"):
            cdp.send(f"{domain}.enable", session=sid)
        cdp.send("Page.setLifecycleEventsEnabled", {"enabled": True}, session=sid)
        cdp.send("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=sid)

        nav = cdp.send("Page.navigate", {"url": html.as_uri()}, session=sid)
        if nav.get("errorText"):
            errors.append(f"navigation failed: {nav['errorText']}")
        else:
            while nav.get("loaderId") not in loaded:  # wait for the load event
                cdp.pump()
        if settle > 0:
            cdp.pump(timeout=settle)

        res = cdp.send("Runtime.evaluate", {
            "expression": _IMAGES_JS, "awaitPromise": True, "returnByValue": True},
            session=sid)
        if "exceptionDetails" in res:
            raise RuntimeError(f"image check failed: {res['exceptionDetails']}")
        info = res["result"]["value"]
        broken = [_short(f"img[{b['index']}]" + (f" id={b['id']!r}" if b["id"] else "")
                         + (f" alt={b['alt']!r}" if b["alt"] else "")
                         + f" src={b['src']!r}: {b['why']}") for b in info["broken"]]

        size = cdp.send("Page.getLayoutMetrics", session=sid)["cssContentSize"]
        clip = {"x": 0, "y": 0, "scale": 1,
                "width": max(1, min(int(size["width"] + 0.999), 16384)),
                "height": max(1, min(int(size["height"] + 0.999), 16384))}
        png = cdp.send("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True, "clip": clip}, session=sid)["data"]
        shot.parent.mkdir(parents=True, exist_ok=True)
        shot.write_bytes(base64.b64decode(png))

        try:  # polite shutdown; the process group is killed below anyway
            cdp.deadline = min(deadline, time.monotonic() + 2)
            cdp.send("Browser.close")
            grace = 2.0
        except (TimeoutError, RuntimeError, OSError):
            pass
        return {"errors": errors, "images": int(info["count"]),
                "broken_images": broken, "screenshot": str(shot)}
    except (TimeoutError, RuntimeError) as exc:
        try:
            with open(stderr_path, errors="replace") as fh:
                tail = fh.read()[-2000:]
        except OSError:
            tail = ""
        raise type(exc)(f"{exc}; chromium stderr tail:\n{tail}") from exc
    finally:
        for fd in (cmd_r, cmd_w, evt_r, evt_w, err_fd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        if pid is not None:
            _kill_group(pid, grace)
        shutil.rmtree(profile, ignore_errors=True)


def _kill_group(pid: int, grace: float) -> None:
    """Reap the browser; SIGKILL its whole process group (== its session)."""
    end = time.monotonic() + grace
    exited = False
    while time.monotonic() < end:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            exited = True
            break
        time.sleep(0.02)
    try:
        os.killpg(pid, signal.SIGKILL)  # zygotes, renderers, gpu, utilities
    except ProcessLookupError:
        pass
    if not exited:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
