"""Run the field-inspection example: the relay, the inspector page and the office.

    python examples/inspections/run.py        # what `make example` runs (build the page first)

1. The relay (``python -m relay``) on loopback, stored in ``DATA/relay.db`` (SQLite);
   its log goes to ``DATA/relay.log``.
2. A small static server for the inspector page (``web/``) on loopback. It also passes
   ``/attachments/`` on to the relay, so the page uploads photos to its own origin.
   (A service worker needs a secure context: http://127.0.0.1 and localhost are one.)
3. The office (``office.py watch --demo``) in the foreground: its output and its
   commands are this terminal's.

Ctrl-C (or SIGTERM) stops all three.
"""

from __future__ import annotations

import argparse
import http.client
import signal
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
WEB = HERE / "web"
PAGE_FILES = {"/", "/index.html", "/style.css", "/sw.js", "/dist/app.js"}
"""What the page server serves (not node_modules or the sources of the bundle)."""


class PageHandler(SimpleHTTPRequestHandler):
    """Serves the page's files from ``web/``, and passes ``/attachments/`` to the relay."""

    relay_http = ""  # http://host:port of the relay
    log_file: Any = None

    def do_GET(self) -> None:
        if self.path.startswith("/attachments/"):
            self.forward()
        elif urlsplit(self.path).path in PAGE_FILES:
            super().do_GET()
        else:
            self.send_error(404)

    def do_POST(self) -> None:
        if self.path.startswith("/attachments/"):
            self.forward()
        else:
            self.send_error(405)

    def end_headers(self) -> None:
        # Revalidate every time: the service worker, not the HTTP cache, keeps the
        # page for offline use.
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def forward(self) -> None:
        """The same request to the relay; its answer back."""
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        relay = urlsplit(self.relay_http)
        connection = http.client.HTTPConnection(relay.hostname or "", relay.port, timeout=30)
        try:
            connection.request(self.command, self.path, body=body)
            answer = connection.getresponse()
            data = answer.read()
        except OSError as exc:
            self.send_error(502, f"the relay is unreachable: {exc}")
            return
        finally:
            connection.close()
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.getheader("Content-Type", "text/plain"))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Requests go to DATA/web.log, not to the office's terminal."""
        if self.log_file is not None:
            self.log_file.write(f"{self.address_string()} {format % args}\n")
            self.log_file.flush()


def start_relay(host: str, port: int, data: Path) -> tuple[subprocess.Popen[str], str]:
    """``python -m relay`` on ``host:port`` (0: a free port); returns it and its URL."""
    log = (data / "relay.log").open("a")
    relay = subprocess.Popen(
        [sys.executable, "-m", "relay", "--host", host, "--port", str(port),
         "--store", f"sqlite:///{data / 'relay.db'}"],
        stdout=subprocess.PIPE, stderr=log, text=True,
        process_group=0,  # not stopped by Ctrl-C with the others: it stops after the office
    )  # fmt: skip
    assert relay.stdout is not None
    line = relay.stdout.readline()  # "listening on ws://host:port ..."
    if "listening on" not in line:
        relay.wait()
        raise SystemExit(f"the relay did not start; see {data / 'relay.log'}")
    return relay, line.split("listening on ")[1].split()[0]


def main() -> int:
    options = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    options.add_argument(
        "--host", default="127.0.0.1", help="loopback address (default: %(default)s)"
    )
    options.add_argument(
        "--relay-port", type=int, default=8765, help="0: any free port (default: %(default)s)"
    )
    options.add_argument(
        "--web-port", type=int, default=8000, help="0: any free port (default: %(default)s)"
    )
    options.add_argument(
        "--data",
        type=Path,
        default=Path("relay-data/example"),
        help="where the relay and office keep their files (default: %(default)s)",
    )
    args = options.parse_args()
    if not (WEB / "dist" / "app.js").exists():
        raise SystemExit(
            "the page is not built: run `make example` "
            "(npm ci and npm run build in examples/inspections/web)"
        )
    args.data.mkdir(parents=True, exist_ok=True)

    relay, relay_url = start_relay(args.host, args.relay_port, args.data)
    try:
        return serve_and_watch(args, relay_url)
    finally:
        relay.terminate()  # it stores what it received, then exits
        relay.wait()


def serve_and_watch(args: argparse.Namespace, relay_url: str) -> int:
    """Serve the page (in a thread) and run the office until it stops; its exit status."""
    PageHandler.relay_http = "http" + relay_url[2:]
    PageHandler.log_file = (args.data / "web.log").open("a")
    try:
        web = ThreadingHTTPServer(
            (args.host, args.web_port), partial(PageHandler, directory=str(WEB))
        )
    except OSError as exc:
        print(f"cannot serve the page on {args.host}:{args.web_port}: {exc} (try --web-port)")
        return 1
    threading.Thread(target=web.serve_forever, daemon=True).start()
    page = f"http://{args.host}:{web.server_port}/?relay={relay_url}/yjs"
    print(
        f"relay:          {relay_url} "
        f"(SQLite: {args.data / 'relay.db'}; log: {args.data / 'relay.log'})"
    )
    print(f"inspector page: {page}")
    print("office:         below; type `help` for its commands. Ctrl-C stops everything.")
    sys.stdout.flush()
    office = subprocess.Popen([
        sys.executable, str(HERE / "office.py"), "--store", str(args.data / "office.db"),
        "--relay", relay_url, "watch", "--demo",
    ])  # fmt: skip

    def stop(signum: int, frame: FrameType | None) -> None:
        office.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)  # Ctrl-C reaches the office too; it stops once
    try:
        return office.wait()
    finally:
        web.shutdown()


if __name__ == "__main__":
    sys.exit(main())
