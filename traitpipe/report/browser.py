"""A real browser reads the report: Debian's headless Chromium, driven by Selenium through Debian's
``chromedriver``, loads a local, self-contained HTML page and says what went wrong (console errors, images that
do not decode) and what it looked like (a full-page screenshot). QA for ``traitpipe check-report`` and CI, not
used by a run: it needs the ``check`` extra (selenium) and ``apt-get install chromium chromium-driver``.
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

#: Every ``<img>`` decoded: how many there are, and why each broken one failed.
_IMAGES_JS = r"""
const done = arguments[arguments.length - 1];
(async () => {
  const broken = [];
  for (const [i, img] of Array.from(document.images).entries()) {
    img.loading = 'eager';
    let why = '';
    try { await img.decode(); } catch (e) { why = 'decode() rejected: ' + (e && e.message || e); }
    if (!why && img.naturalWidth === 0) why = 'naturalWidth == 0';
    if (why) broken.push(`image ${i}${img.alt ? ' (' + img.alt + ')' : ''}: ${why}`);
  }
  done({count: document.images.length, broken: broken});
})();
"""


def find_chromium() -> str | None:
    """The Chromium binary (``CHROMIUM_BIN``, else ``chromium`` on PATH), or None."""
    return shutil.which(os.environ.get("CHROMIUM_BIN", "chromium"))


def check_page(html_path, screenshot_path, timeout: float = 60, *, width: int = 1280, height: int = 800) -> dict:
    """Load a local HTML file in headless Chromium and report its problems.

    Parameters
    ----------
    html_path : str or os.PathLike
        A self-contained page (images as ``data:`` URIs or local files), opened through a ``file://`` URL with
        no DNS at all: an external URL fails and shows in ``errors``.
    screenshot_path : str or os.PathLike
        Where to write a PNG of the whole page (not only the viewport).
    timeout : float
        Seconds for loading the page and for decoding its images.
    width, height : int
        Viewport size in CSS pixels.

    Returns
    -------
    dict
        ``errors`` (console errors, uncaught exceptions, resources that failed to load), ``images`` (the number
        of ``<img>``), ``broken_images`` (one line per image that does not decode) and ``screenshot`` (the PNG's
        absolute path).

    Raises
    ------
    FileNotFoundError
        When the page, the browser, the driver or selenium is missing.
    TimeoutError
        When loading or decoding takes longer than ``timeout``.
    """
    html, shot = Path(html_path).resolve(), Path(screenshot_path).resolve()
    if not html.is_file():
        raise FileNotFoundError(html)
    chromium, driver_file = find_chromium(), shutil.which("chromedriver")
    if chromium is None or driver_file is None:
        raise FileNotFoundError("chromium and chromedriver are needed (Debian: apt-get install chromium "
                                "chromium-driver; or set CHROMIUM_BIN)")
    try:
        from selenium import webdriver
        from selenium.common.exceptions import TimeoutException
    except ImportError:
        raise FileNotFoundError("selenium is not installed (pip install 'traitpipe[check]')") from None
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 f"--window-size={width},{height}", "--host-resolver-rules=MAP * ~NOTFOUND", "--no-proxy-server", "--disable-background-networking",
                 "--disable-component-update", "--force-color-profile=srgb", "--hide-scrollbars"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "SEVERE"})
    # the driver named here: Selenium Manager never looks for (or downloads) another
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_file))
    try:
        driver.set_page_load_timeout(timeout)
        driver.set_script_timeout(timeout)
        try:
            driver.get(html.as_uri())
            images = driver.execute_async_script(_IMAGES_JS)
        except TimeoutException:
            raise TimeoutError(f"{html} did not load and decode its images within {timeout} s") from None
        errors = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        png = driver.execute_cdp_cmd("Page.captureScreenshot", {"captureBeyondViewport": True, "clip": {
            "x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 16384), "scale": 1}})
    finally:
        driver.quit()
    shot.parent.mkdir(parents=True, exist_ok=True)
    shot.write_bytes(base64.b64decode(png["data"]))
    return {"errors": errors, "images": images["count"], "broken_images": images["broken"], "screenshot": str(shot)}
