"""The draw-a-digit page: its server's API, and the page itself in headless Chromium.

The browser test drives Debian's chromium through the DevTools protocol (websocket-client):
it draws a stroke with real mouse events, draws another with touch events, opens a picture
through the file chooser, reads the prediction, the bars and the heatmap off the page, and
takes a screenshot (``demo-page.png`` in the test's temp folder). It is skipped when
chromium is not installed.
"""
from __future__ import annotations

import base64
import http.client
import io
import json
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from PIL import Image

from mobilenet_lab.checkpoint import load
from mobilenet_lab.evaluation import evaluate
from mobilenet_lab.tools.demo import MAX_BYTES, make_server
from mobilenet_lab.tools.predict import Classifier
from test_predict import held_out, render, trained_model  # noqa: F401 (a fixture)


@pytest.fixture(scope="module")
def server(trained_model):  # noqa: F811
    """The demo server on a free port of 127.0.0.1, serving the trained fixture model."""
    srv = make_server(Classifier.from_file(trained_model), "127.0.0.1", 0, str(trained_model))
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def request(server, path: str, body: bytes | None = None, content_type: str | None = None,
            method: str | None = None) -> tuple[int, dict | bytes, str]:
    """(status, JSON or bytes, content type) of one request to the test server."""
    headers = {"Content-Type": content_type} if content_type else {}
    req = urllib.request.Request(server.url.rstrip("/") + path, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            status, data, kind = resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        status, data, kind = err.code, err.read(), err.headers.get("Content-Type", "")
    return status, (json.loads(data) if kind.startswith("application/json") else data), kind


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# The API.
# ---------------------------------------------------------------------------------------------
def test_page_and_static_files(server):
    for path, kind in (("/", "text/html"), ("/app.js", "text/javascript"), ("/style.css", "text/css")):
        status, body, content_type = request(server, path)
        assert status == 200 and content_type.startswith(kind) and len(body) > 100
        assert b"://" not in body, "works offline: nothing fetched from elsewhere"
    status, body, _ = request(server, "/")
    assert b'<canvas id="pad"' in body and b"app.js" in body and b"style.css" in body


def test_info(server):
    status, info, _ = request(server, "/api/info")
    assert status == 200
    assert info["classes"] == [str(i) for i in range(10)] and info["input_dim"] == [1, 28, 28]
    assert "ConvDw" in info["description"] and info["max_bytes"] == MAX_BYTES


def test_predict_a_picture(server, trained_model):
    # three held-out digits the fixture model (about 90% accurate) gets right with confidence, so a wrong answer
    # is the picture's conversion, not the small model's error rate (which differs from CPU to CPU)
    x, y = held_out(200)
    probs = evaluate(load(trained_model), torch.from_numpy(x), torch.from_numpy(y)).probs
    known = [i for i in range(len(y)) if probs[i].argmax() == int(y[i]) and probs[i].max() > 0.9][:3]
    assert len(known) == 3
    x, y = x[known], y[known]
    for digit, label, kind in zip(x, y, ("dark-on-light", "rgb", "light-on-dark")):
        status, answer, _ = request(server, "/api/predict", png(render(digit, kind)), "image/png")
        assert status == 200
        assert len(answer["probs"]) == 10 and abs(sum(answer["probs"]) - 1) < 1e-3
        assert answer["label"] == str(label) and answer["index"] == int(label)
        for key in ("input_png", "cam_png"):
            assert answer[key].startswith("data:image/png;base64,")
            picture = Image.open(io.BytesIO(base64.b64decode(answer[key].split(",", 1)[1])))
            assert picture.size == (224, 224)


@pytest.mark.parametrize("path, body, content_type, method, status, message", [
    ("/api/predict", b"hello", "text/plain", "POST", 415, "not a picture"),
    ("/api/predict", b"not a png at all", "image/png", "POST", 422, "cannot be decoded"),
    ("/api/predict", b"", "image/png", "POST", 400, "empty"),
    ("/api/predict", None, None, "GET", 405, "POST"),
    ("/api/info", b"x", "image/png", "POST", 405, "GET only"),
    ("/nowhere", None, None, "GET", 404, "no page"),
    ("/../mobilenet_lab/demo.py", None, None, "GET", 404, "no page"),
])
def test_bad_requests_get_a_clear_4xx(server, path, body, content_type, method, status, message):
    got, answer, kind = request(server, path, body, content_type, method)
    assert got == status and kind == "application/json" and message in answer["error"]
    assert request(server, "/api/info")[0] == 200  # still serving


def test_a_blank_drawing_and_huge_uploads_are_refused(server):
    status, answer, _ = request(server, "/api/predict", png(Image.new("L", (280, 280), 0)), "image/png")
    assert status == 422 and "no digit found" in answer["error"]
    status, answer, _ = request(server, "/api/predict", b"\0" * (MAX_BYTES + 1), "application/octet-stream")
    assert status == 413 and "more than" in answer["error"]
    status, answer, _ = request(server, "/api/predict", b"\x89PNG" + b"\0" * 50 * 2**20, "image/png")  # 50 MB
    assert status == 413 and "52,428,804 bytes" in answer["error"]
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=30)  # claims 10 GB, sends nothing
    conn.putrequest("POST", "/api/predict")
    conn.putheader("Content-Type", "image/jpeg")
    conn.putheader("Content-Length", str(10 ** 10))
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 413 and "10,000,000,000 bytes" in json.loads(resp.read())["error"]
    conn.close()
    for side in (8000, 20000):  # 64 and 400 megapixels in small PNGs (the second one a decompression bomb)
        status, answer, _ = request(server, "/api/predict", png(Image.new("1", (side, side), 0)), "image/png")
        assert status == 413 and "shrink it" in answer["error"]
    assert request(server, "/api/info")[0] == 200


def test_missing_length_and_truncated_bodies(server):
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.putrequest("POST", "/api/predict")
    conn.putheader("Content-Type", "image/png")
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 411 and "Content-Length" in json.loads(resp.read())["error"]
    conn.close()
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.putrequest("POST", "/api/predict")
    conn.putheader("Content-Type", "image/png")
    conn.putheader("Content-Length", "1000")
    conn.endheaders()
    conn.send(b"\x89PNG only a little")
    conn.sock.shutdown(1)  # the client gives up half-way
    resp = conn.getresponse()
    assert resp.status == 400 and "ended after" in json.loads(resp.read())["error"]
    conn.close()
    assert request(server, "/api/info")[0] == 200


# ---------------------------------------------------------------------------------------------
# The page, in headless Chromium.
# ---------------------------------------------------------------------------------------------
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


class Browser:
    """Headless Chromium driven through the DevTools protocol over a websocket."""

    def __init__(self, profile: Path):
        import websocket  # websocket-client

        profile.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--remote-debugging-port=0",
             "--remote-allow-origins=*", "--window-size=1100,760", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                pytest.fail("chromium did not start its DevTools endpoint")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as resp:
            page = next(t for t in json.load(resp) if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        self.next_id = 0

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        status = self.evaluate("document.body.dataset.state + ': ' + document.getElementById('status').textContent")
        raise AssertionError(f"timed out waiting for {expression}; the page says {status}")

    def settled(self, after: int) -> dict:
        """Wait until the page has shown more than ``after`` predictions and stopped asking."""
        self.wait_for(f"Number(document.body.dataset.predictions || 0) > {after}")
        last, since = None, time.monotonic()
        while time.monotonic() - since < 1.0:
            now = self.evaluate("JSON.stringify([document.body.dataset.state, document.body.dataset.predictions])")
            if now != last:
                last, since = now, time.monotonic()
            time.sleep(0.1)
        return self.evaluate("""({
            state: document.body.dataset.state,
            predictions: Number(document.body.dataset.predictions),
            label: document.getElementById('prediction').textContent,
            confidence: document.getElementById('confidence').textContent,
            bars: [...document.querySelectorAll('#bars li')].map(li => [
                li.querySelector('.bar-label').textContent,
                li.querySelector('.bar').getBoundingClientRect().width
                    / li.querySelector('.bar-track').getBoundingClientRect().width,
                li.classList.contains('top')]),
            pictures: ['input-img', 'cam-img'].map(id => document.getElementById(id).src.startsWith(
                'data:image/png;base64,') && document.getElementById(id).naturalWidth),
        })""")

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def stroke(browser: Browser, points: list[tuple[float, float]], touch: bool = False) -> None:
    """Draw through ``points`` (fractions of the pad's width and height) with the mouse or a finger."""
    box = browser.evaluate("(() => { const r = document.getElementById('pad').getBoundingClientRect(); "
                           "return [r.left, r.top, r.width, r.height]; })()")
    xy = [(box[0] + fx * box[2], box[1] + fy * box[3]) for fx, fy in points]
    steps = []  # a point every few pixels, as a hand would
    for (x0, y0), (x1, y1) in zip(xy, xy[1:]):
        n = max(1, int(max(abs(x1 - x0), abs(y1 - y0)) // 8))
        steps += [(x0 + (x1 - x0) * i / n, y0 + (y1 - y0) * i / n) for i in range(1, n + 1)]
    if touch:
        browser.call("Input.dispatchTouchEvent", type="touchStart", touchPoints=[{"x": xy[0][0], "y": xy[0][1]}])
        for x, y in steps:
            browser.call("Input.dispatchTouchEvent", type="touchMove", touchPoints=[{"x": x, "y": y}])
        browser.call("Input.dispatchTouchEvent", type="touchEnd", touchPoints=[])
        return
    browser.call("Input.dispatchMouseEvent", type="mousePressed", x=xy[0][0], y=xy[0][1], button="left",
                 buttons=1, clickCount=1)
    for x, y in steps:
        browser.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y, button="left", buttons=1)
    browser.call("Input.dispatchMouseEvent", type="mouseReleased", x=steps[-1][0], y=steps[-1][1], button="left",
                 buttons=0, clickCount=1)


def canvas_prediction(browser: Browser, server) -> str:
    """What the API says about the pad's current drawing."""
    data_url = browser.evaluate("document.getElementById('pad').toDataURL('image/png')")
    status, answer, _ = request(server, "/api/predict", base64.b64decode(data_url.split(",", 1)[1]), "image/png")
    assert status == 200
    return answer["label"]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_draw_a_digit_in_chromium(server, tmp_path):
    pytest.importorskip("websocket", reason="the browser test needs websocket-client")
    browser = Browser(tmp_path / "profile")
    try:
        browser.call("Page.enable")
        browser.call("Page.navigate", url=server.url)
        browser.wait_for("document.body && document.body.dataset.state === 'ready'")
        assert browser.evaluate("document.querySelectorAll('#bars li').length") == 10

        # A mouse stroke: a vertical line is a 1; the page answers while drawing and after.
        stroke(browser, [(0.5, 0.15), (0.5, 0.85)])
        shown = browser.settled(0)
        assert shown["state"] == "done", shown
        assert shown["label"] == "1" == canvas_prediction(browser, server)
        assert [b[0] for b in shown["bars"]] == [str(i) for i in range(10)]
        assert [b[2] for b in shown["bars"]].index(True) == 1 and shown["bars"][1][1] > 0.5  # drawn, not just set
        assert shown["pictures"] == [224, 224], "what the model saw and its Grad-CAM are shown"
        shot = tmp_path / "demo-page.png"
        shot.write_bytes(base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"]))
        print(f"screenshot: {shot}")

        # Clear, then a finger draws a 7: the page follows the new drawing.
        browser.evaluate("document.getElementById('clear').click()")
        assert browser.evaluate("document.getElementById('prediction').textContent") == "\u2013"
        browser.call("Emulation.setTouchEmulationEnabled", enabled=True, maxTouchPoints=1)
        stroke(browser, [(0.25, 0.2), (0.75, 0.2), (0.45, 0.85)], touch=True)
        touched = browser.settled(shown["predictions"])
        assert touched["state"] == "done" and touched["label"] == canvas_prediction(browser, server)

        # A picture chosen in the file dialog (the drop handler's path): its own bytes are classified.
        x, y = held_out(1)
        picture = tmp_path / "digit.jpg"
        render(x[0], "photo").save(picture)
        root = browser.call("DOM.getDocument")["root"]["nodeId"]
        node = browser.call("DOM.querySelector", nodeId=root, selector="#file")["nodeId"]
        browser.call("DOM.setFileInputFiles", files=[str(picture)], nodeId=node)
        opened = browser.settled(touched["predictions"])
        assert opened["state"] == "done" and opened["label"] == str(y[0])
        shot = tmp_path / "demo-page-picture.png"
        shot.write_bytes(base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"]))
    finally:
        browser.close()
