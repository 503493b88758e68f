"""Render an HTML page in headless Chromium and report what a reader would see broken.

Chromium is driven through the DevTools protocol over a pipe (``--remote-debugging-pipe``:
JSON messages ending in a NUL byte on file descriptors 3 and 4), so no Python package
beyond the standard library is needed. Debian's ``chromium`` package provides the browser.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

#: Names of the browser's executable, tried in order.
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")

#: Run in the page once it has loaded: open every collapsible section, wait for every image
#: to decode, then list what is broken.
_CHECK_PAGE = """(async () => {
  document.querySelectorAll('details').forEach(d => { d.open = true; });
  await Promise.all([...document.images].map(i => i.decode().catch(() => null)));
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  const root = document.documentElement;
  return JSON.stringify({
    n_images: document.images.length,
    broken: [...document.images].filter(i => !i.complete || i.naturalWidth === 0)
                                .map(i => (i.alt || i.src).slice(0, 120)),
    external: [...document.querySelectorAll('img[src], script[src], link[href], iframe')]
                .map(e => e.getAttribute('src') || e.getAttribute('href'))
                .filter(u => u && !u.startsWith('data:')),
    scroll_width: root.scrollWidth, window_width: window.innerWidth,
  });
})()"""


def find_chromium() -> str | None:
    """Path of the Chromium executable, or None."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class Rendered:
    """What the browser saw on a page."""

    n_images: int = 0
    broken_images: list = field(default_factory=list)
    script_errors: list = field(default_factory=list)
    requests: list = field(default_factory=list)        # URLs fetched besides the page
    scroll_width: int = 0
    window_width: int = 0
    screenshots: list = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        """Everything that is wrong, in words; empty when the page is fine."""
        found = [f"broken image: {alt}" for alt in self.broken_images]
        found += [f"script or console error: {e}" for e in self.script_errors]
        found += [f"external request: {u}" for u in self.requests]
        if self.scroll_width > self.window_width:
            found.append(f"page is {self.scroll_width} px wide, window {self.window_width} px")
        return found


class _Pipe:
    """The DevTools protocol over Chromium's debugging pipe."""

    def __init__(self, process, write_fd: int, read_fd: int):
        self.process, self.write_fd, self.read_fd = process, write_fd, read_fd
        self.buffer, self.events, self.next_id = b"", [], 0

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self.buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("no answer from Chromium")
            chunk = os.read(self.read_fd, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the pipe")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: str | None = None, timeout: float = 60, **params):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._read_message(deadline)
            if answer.get("id") == self.next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    def wait_for(self, method: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._read_message(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event


def _launch(chromium: str, profile: str):
    """Chromium with fd 3 (its input) and fd 4 (its output) connected to our pipes."""
    to_browser_r, to_browser_w = os.pipe()
    from_browser_r, from_browser_w = os.pipe()

    def child_fds():
        high_r, high_w = os.dup(to_browser_r), os.dup(from_browser_w)
        os.dup2(high_r, 3)
        os.dup2(high_w, 4)

    process = subprocess.Popen(
        [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--remote-debugging-pipe", "--no-first-run", "--disable-extensions",
         f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=child_fds,
        # fds 3 and 4 are inheritable (dup2), every other one is not; its own process group
        close_fds=False, start_new_session=True)
    os.close(to_browser_r)
    os.close(from_browser_w)
    return process, _Pipe(process, to_browser_w, from_browser_r)


def _stop(process) -> None:
    """End Chromium and every helper process it started (its own process group)."""
    import signal

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=10)
            break
        except subprocess.TimeoutExpired:
            continue
    process.wait()


def _errors(events: list, page_url: str) -> tuple[list, list]:
    errors, requests = [], []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            errors.append(details.get("exception", {}).get("description")
                          or details.get("text", "exception"))
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            errors.append(" ".join(str(a.get("value", a.get("description", "")))
                                   for a in params.get("args", [])))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            errors.append(params["entry"].get("text", "error"))
        elif method == "Network.requestWillBeSent":
            url = params.get("request", {}).get("url", "")
            if not url.startswith("data:") and url != page_url:
                requests.append(url)
    return errors, requests


def _screenshot(pipe, session: str, path: Path, full_page: bool) -> Path:
    import base64

    params = {"format": "png"}
    if full_page:
        size = pipe.call("Page.getLayoutMetrics", session)["cssContentSize"]
        params.update(captureBeyondViewport=True,
                      clip={"x": 0, "y": 0, "width": size["width"],
                            "height": min(size["height"], 16000), "scale": 1})
    data = pipe.call("Page.captureScreenshot", session, **params)["data"]
    path.write_bytes(base64.b64decode(data))
    return path


def render(page: Path, screenshots: Path | None = None, width: int = 1280,
           height: int = 900, chromium: str | None = None) -> Rendered:
    """Open ``page`` (a local HTML file) in headless Chromium with a ``width`` x ``height``
    window; with ``screenshots`` (a folder), save ``<stem>_top.png`` (the first screen) and
    ``<stem>_page.png`` (the whole page as loaded), before the checks open every section."""
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError("Chromium not found: apt-get install -y chromium")
    url = Path(page).absolute().as_uri()
    # Chromium's helper processes can still be writing into the profile as it is removed
    with tempfile.TemporaryDirectory(prefix="llmfbn-chromium-",
                                     ignore_cleanup_errors=True) as profile:
        process, pipe = _launch(chromium, profile)
        try:
            target = pipe.call("Target.createTarget", url="about:blank")["targetId"]
            session = pipe.call("Target.attachToTarget", targetId=target,
                                flatten=True)["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                pipe.call(f"{domain}.enable", session)
            pipe.call("Emulation.setDeviceMetricsOverride", session, width=width,
                      height=height, deviceScaleFactor=1, mobile=False)
            pipe.call("Page.navigate", session, url=url)
            pipe.wait_for("Page.loadEventFired", timeout=120)
            result = Rendered()
            if screenshots is not None:
                Path(screenshots).mkdir(parents=True, exist_ok=True)
                stem = Path(page).stem
                result.screenshots = [
                    _screenshot(pipe, session, Path(screenshots) / f"{stem}_top.png", False),
                    _screenshot(pipe, session, Path(screenshots) / f"{stem}_page.png", True)]
            checked = pipe.call("Runtime.evaluate", session, timeout=120,
                                expression=_CHECK_PAGE,
                                awaitPromise=True, returnByValue=True)
            if "exceptionDetails" in checked:
                raise RuntimeError(f"page check failed: {checked['exceptionDetails']}")
            seen = json.loads(checked["result"]["value"])
        finally:
            _stop(process)
            os.close(pipe.write_fd)
            os.close(pipe.read_fd)
    result.script_errors, result.requests = _errors(pipe.events, url)
    result.n_images, result.broken_images = seen["n_images"], seen["broken"]
    result.requests += [u for u in seen["external"] if u not in result.requests]
    result.scroll_width, result.window_width = seen["scroll_width"], seen["window_width"]
    return result
