"""A local draw-a-digit page: draw with mouse or touch, or drop a picture, and watch the model.

    python -m mobilenet_lab demo [--model PATH] [--port N]

The page (plain HTML, JS and CSS in ``demo_static/``, nothing fetched from the internet) shows the prediction, the
probability of every class as bars, what the model saw, and the Grad-CAM heatmap, updated while one draws. The server is
the standard library's; it binds to 127.0.0.1 unless told otherwise.

API:
    GET  /api/info     -> {"model", "description", "classes", "input_dim", "max_bytes"}
    POST /api/predict  body: the picture's bytes (Content-Type image/* or application/octet-stream)
                       -> {"label", "index", "classes", "probs", "input_png", "cam_png", "ms"}
    Errors are JSON {"error": message} with status 400 (empty or malformed request), 404, 405,
    411 (no Content-Length), 413 (too large), 415 (not a picture's content type) or 422
    (a picture that cannot be read or holds no digit)."""
import argparse
import json
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ..errors import Parser, UserError, run_cli
from ..reading import TooLarge
from .predict import DEFAULT_MODEL, Classifier, cam_picture, model_input_picture, png_data_url
from .preprocess import read_image

STATIC_DIR = Path(__file__).resolve().parent / "demo_static"
STATIC_FILES = {  # URL path -> (file in STATIC_DIR, content type); nothing else is served
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
MAX_BYTES = 16 * 2**20        # largest upload: a drawing is a few KB, a phone photo a few MB; more gets 413 unread
DRAIN_LIMIT = 8 * MAX_BYTES    # read away up to this (a 50 MB photo too) so the client sees its 413; more is not read
PICTURE_TYPES = ("image/", "application/octet-stream")


class ApiError(Exception):
    """A request the server refuses, with its HTTP status."""

    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


class DemoServer(ThreadingHTTPServer):
    """The HTTP server, holding the classifier (used by one request at a time)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], classifier: Classifier, model_path: str):
        self.classifier = classifier
        self.model_path = model_path
        self.lock = threading.Lock()  # Grad-CAM hooks the model: one request at a time
        super().__init__(address, DemoHandler)

    def handle_error(self, request, client_address, exc: BaseException | None = None) -> None:
        """One log line, not a traceback: clients that reset or drop their connection are routine."""
        exc = exc or sys.exc_info()[1]
        what = "disconnected" if isinstance(exc, (ConnectionError, TimeoutError)) else "internal error"
        print(f"[{time.strftime('%H:%M:%S')}] {client_address[0]}: {what} ({type(exc).__name__}: {exc})",
              file=sys.stderr, flush=True)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def info(self) -> dict:
        """The JSON answer of /api/info: the model, its classes and the upload limit."""
        config = self.classifier.net.architecture
        return {"model": self.model_path, "description": self.classifier.describe(),
                "classes": self.classifier.class_names, "input_dim": list(config.input_dim), "max_bytes": MAX_BYTES}

    def predict(self, body: bytes) -> dict:
        """Classify one picture; the JSON answer of /api/predict."""
        started = time.perf_counter()
        try:
            picture = read_image(body, "the uploaded file")
            with self.lock:
                result, = self.classifier.classify([picture], cam=True)
        except TooLarge as exc:
            raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, str(exc)) from exc
        except UserError as exc:
            raise ApiError(HTTPStatus.UNPROCESSABLE_ENTITY, str(exc)) from exc
        return {"label": result.label, "index": result.index, "classes": result.class_names,
                "probs": [round(float(p), 6) for p in result.probs],
                "input_png": png_data_url(model_input_picture(result.model_input)),
                "cam_png": png_data_url(cam_picture(result.model_input, result.cam)),
                "ms": round((time.perf_counter() - started) * 1000, 1)}


class DemoHandler(BaseHTTPRequestHandler):
    """Serves the page's files and the JSON API; every failure is a JSON error, never a crash."""

    server: DemoServer
    server_version = "mobilenet-lab-demo"
    protocol_version = "HTTP/1.1"  # keep-alive: the page asks for a prediction at every stroke
    timeout = 30  # seconds a client may take to send its request

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._answer(self._get)

    def do_POST(self) -> None:  # noqa: N802
        self._answer(self._post)

    def _get(self) -> tuple[HTTPStatus, str, bytes]:
        path = self.path.split("?", 1)[0]
        if path == "/api/info":
            return HTTPStatus.OK, "application/json", json.dumps(self.server.info()).encode()
        if path == "/api/predict":
            raise ApiError(HTTPStatus.METHOD_NOT_ALLOWED, "POST the picture's bytes to /api/predict")
        if path not in STATIC_FILES:
            raise ApiError(HTTPStatus.NOT_FOUND, f"no page at {path}: open /")
        name, content_type = STATIC_FILES[path]
        return HTTPStatus.OK, content_type, (STATIC_DIR / name).read_bytes()

    def _post(self) -> tuple[HTTPStatus, str, bytes]:
        path = self.path.split("?", 1)[0]
        if path != "/api/predict":
            if path in STATIC_FILES or path == "/api/info":
                raise ApiError(HTTPStatus.METHOD_NOT_ALLOWED, f"{path} answers GET only")
            raise ApiError(HTTPStatus.NOT_FOUND, f"nothing at {path}: POST pictures to /api/predict")
        return HTTPStatus.OK, "application/json", json.dumps(self.server.predict(self._body())).encode()

    def _body(self) -> bytes:
        """The request's body, checked for type and size before it is read."""
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if not content_type.startswith(PICTURE_TYPES):
            raise ApiError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                           f"Content-Type '{content_type or 'none'}' is not a picture: send the file's bytes "
                           f"as image/png, image/jpeg ... or application/octet-stream")
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            raise ApiError(HTTPStatus.LENGTH_REQUIRED, "the request needs a Content-Length header")
        try:
            length = int(length_text)
        except ValueError:
            raise ApiError(HTTPStatus.BAD_REQUEST, f"Content-Length '{length_text}' is not a number") from None
        if length > MAX_BYTES:
            # Read the body away (up to DRAIN_LIMIT), so that a client still sending it sees the answer.
            left = length if length <= DRAIN_LIMIT else 0
            while left > 0 and (chunk := self.rfile.read(min(left, 1 << 20))):
                left -= len(chunk)
            raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                           f"the picture has {length:,} bytes, more than {MAX_BYTES:,}: send a smaller one")
        if length <= 0:
            raise ApiError(HTTPStatus.BAD_REQUEST, "the request is empty: send a picture's bytes")
        body = self.rfile.read(length)
        if len(body) < length:
            raise ApiError(HTTPStatus.BAD_REQUEST, f"the request ended after {len(body)} of {length} bytes")
        return body

    def _answer(self, route) -> None:
        """Send what ``route`` returns, or its refusal as JSON, or a 500 for a bug."""
        try:
            status, content_type, body = route()
        except ConnectionError as exc:  # the client went away mid-request: nothing to answer, one log line
            self.server.handle_error(self.request, self.client_address, exc)
            self.close_connection = True
            return
        except ApiError as exc:
            status, content_type, body = exc.status, "application/json", json.dumps({"error": str(exc)}).encode()
            self.close_connection = True  # the request's body may be unread: the connection cannot go on
        except Exception as exc:  # a bug must not take the server down
            self.log_error("internal error: %r", exc)
            status, content_type = HTTPStatus.INTERNAL_SERVER_ERROR, "application/json"
            body = json.dumps({"error": f"internal error ({type(exc).__name__}): see the server's output"}).encode()
            self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_request(self, code="-", size="-") -> None:
        """Log refused requests only (the page asks for a prediction at every stroke)."""
        if isinstance(code, HTTPStatus):
            code = code.value
        if str(code).isdigit() and int(code) >= 400:
            super().log_request(code, size)


def make_server(classifier: Classifier, host: str = "127.0.0.1", port: int = 8000,
                model_path: str = "") -> DemoServer:
    """Create (but do not start) the demo server."""
    try:
        return DemoServer((host, port), classifier, model_path)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror or exc}): pass another --port "
                        f"(0 picks a free one)") from exc


def main(argv: list[str] | None = None) -> int:
    parser = Parser(
        prog="python -m mobilenet_lab demo",
        description="Serve a local page where you draw a digit (mouse or touch) or drop a picture and see the "
                    "prediction, every class's probability and the Grad-CAM heatmap.")
    parser.add_argument("--model", metavar="PATH", type=Path, default=DEFAULT_MODEL,
                        help="saved model to demonstrate (default: saved_models/mobilenet.pt in the project)")
    parser.add_argument("--port", metavar="N", type=int, default=8000,
                        help="TCP port to serve on; 0 picks a free one (default: 8000)")
    parser.add_argument("--host", metavar="ADDR", default="127.0.0.1",
                        help="address to bind; 0.0.0.0 shows the page to other computers too "
                             "(default: 127.0.0.1, this computer only)")
    args = parser.parse_args(argv)
    return run_cli(run, args)


def run(args: argparse.Namespace) -> int:
    """Load the model and serve the page until Ctrl-C."""
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port} is not a TCP port: use 1-65535, or 0 for any free port")
    classifier = Classifier.from_file(args.model)
    server = make_server(classifier, args.host, args.port, str(args.model))
    print(f"model: {args.model} ({classifier.describe()})")
    print(f"draw a digit at {server.url}  (Ctrl-C stops the server)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped")
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
