"""The field-inspection example (``examples/inspections``) in a real browser.

``examples/inspections/run.py`` (what ``make example`` runs) starts the relay (SQLite),
the page's static server and the office process, all on 127.0.0.1 and free ports; a
headless Chromium (Debian's ``chromium`` package, never a downloaded browser) driven by
Playwright plays the inspector, and the office is driven through its stdin and read
from its stdout, as a person would in the terminal.

Needs ``/usr/bin/chromium`` (``make test`` installs Debian's package when it is missing)
and the built page (``make example-web``: npm ci and esbuild, pinned in
``examples/inspections/web/package-lock.json``). Without them the test skips and says
how to get them, except in CI (``CI=true``), where it fails.

Screenshots of each step go to the test's temporary directory (printed), or to
``$CRDTSYNC_SCREENSHOTS`` if set. Nothing here sleeps to wait: Playwright waits for
selectors and text, and the office's output is awaited line by line.
"""

from __future__ import annotations

import asyncio
import os
import signal
import struct
import sys
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from .relay_helpers import ROOT

EXAMPLE = ROOT / "examples" / "inspections"
BUNDLE = EXAMPLE / "web" / "dist" / "app.js"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 15_000
"""How long Playwright waits for a selector or text (a bound, not a delay)."""

pytestmark = pytest.mark.timeout(180)


def browser_missing() -> str | None:
    """Why the browser test cannot run here, or None if it can."""
    if not Path(CHROMIUM).exists():
        return (
            "Chromium is not installed: `apt-get install chromium` (Debian's package; "
            "`make test` installs it when it can)"
        )
    try:
        import playwright  # noqa: F401, PLC0415
    except ImportError:
        return "the Python package playwright is missing: pip install -e '.[test]'"
    if not BUNDLE.exists():
        return "the inspector page is not built: run `make example-web`"
    return None


def test_the_page_writes_records_with_the_tested_layout_code() -> None:
    """The page's records.js is a copy of tests/js/records.mjs, which the Node interop
    tests check against Python collections. A copy, not an import: each bundles the
    yjs of its own npm tree (two Yjs instances in one bundle break its types)."""
    page = (EXAMPLE / "web" / "records.js").read_bytes()
    tested = (ROOT / "tests" / "js" / "records.mjs").read_bytes()
    assert page == tested, "examples/inspections/web/records.js differs from tests/js/records.mjs"


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium. Skips without it, but fails in CI, which must run this test."""
    reason = browser_missing()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but the browser test cannot run: {reason}", pytrace=False)
        pytest.skip(f"browser test skipped: {reason}")
    return CHROMIUM


class Example:
    """``run.py`` in a subprocess (its own process group): its printed lines, its stdin."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log
        self.lines: list[str] = []
        self._line = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def start(cls, data: Path) -> Example:
        data.mkdir(parents=True, exist_ok=True)
        log = data / "run.stderr"
        with log.open("ab") as stderr:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(EXAMPLE / "run.py"),
                "--relay-port",
                "0",
                "--web-port",
                "0",
                "--data",
                str(data),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,  # teardown can stop the relay and office with it
            )
        return cls(proc, log)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))
            line, self._line = self._line, asyncio.Event()
            line.set()
        self._line.set()

    async def printed(self, text: str, after: int = 0, timeout: float = 20) -> int:
        """Wait until a line from number ``after`` on contains ``text``; return the
        number of the line after it."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for index in range(after, len(self.lines)):
                        if text in self.lines[index]:
                            return index + 1
                    after = len(self.lines)
                    if self._reader.done():
                        raise AssertionError("run.py exited")
                    await self._line.wait()
        except (TimeoutError, AssertionError) as exc:
            output = "\n".join(self.lines)
            raise AssertionError(
                f"{text!r} not printed ({exc!r}); output:\n{output}\n"
                f"stderr:\n{self.log.read_text(errors='replace')[-3000:]}"
            ) from exc

    def line(self, text: str) -> str:
        """The last printed line containing ``text``."""
        return next(line for line in reversed(self.lines) if text in line)

    async def type(self, command: str) -> int:
        """Type a command to the office; return the line number its output starts at."""
        assert self.proc.stdin is not None
        start = len(self.lines)
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        return start

    async def stop(self) -> None:
        """SIGTERM (what Ctrl-C does); SIGKILL to the whole group if it hangs."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                os.killpg(self.proc.pid, signal.SIGKILL)
                await self.proc.wait()
        await self._reader


@pytest.fixture
async def example(tmp_path: Path) -> AsyncIterator[Example]:
    started = await Example.start(tmp_path / "data")
    try:
        yield started
    finally:
        await started.stop()
    assert started.proc.returncode == 0, started.log.read_text(errors="replace")


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A small one-colour PNG: the inspector's "photo"."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


async def test_offline_inspection_in_a_browser(
    chromium: str, example: Example, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright, expect  # noqa: PLC0415

    began = time.perf_counter()
    shots = Path(os.environ.get("CRDTSYNC_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    print(f"screenshots: {shots}")
    expect.set_options(timeout=WAIT_MS)
    await example.printed("watching 'inspections'")
    url = example.line("inspector page:").split()[-1]

    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh user-data-dir
            executable_path=chromium,
            args=CHROMIUM_FLAGS,
            viewport={"width": 420, "height": 760},
        )
        try:
            errors: list[str] = []
            context.on("weberror", lambda error: errors.append(str(error.error)))
            context.on(
                "console",
                lambda message: errors.append(message.text) if message.type == "error" else None,
            )
            page = context.pages[0] if context.pages else await context.new_page()

            # 1. Online: the office's assignments.
            await page.goto(url)
            for record_id in ("I-101", "I-102", "I-103"):
                await expect(page.locator(f'#list li[data-id="{record_id}"]')).to_be_visible()
            await expect(page.locator("#network")).to_have_text("online")
            await expect(page.locator("#shell")).to_contain_text("Saved for offline use")
            await page.screenshot(path=shots / "1-online.png")

            # 2. Offline, reloaded: the shell from the service worker, the records from
            # IndexedDB.
            await context.set_offline(True)
            response = await page.reload()
            assert response is not None and response.from_service_worker
            await expect(page.locator("#network")).to_have_text("offline")
            await expect(page.locator('#list li[data-id="I-102"]')).to_contain_text(
                "Pump station 3"
            )
            await page.screenshot(path=shots / "2-offline-reloaded.png")

            # 3. Filled in and submitted offline: pending, and still pending after the
            # page is closed and opened again (offline).
            photo = png(64, 48, (40, 120, 200))
            await page.click('#list li[data-id="I-102"] a')
            await page.select_option("select[name=condition]", "poor")
            await page.fill("textarea[name=notes]", "Generator fails to start; battery flat")
            await page.set_input_files(
                "#photo-file",
                files=[{"name": "generator.png", "mimeType": "image/png", "buffer": photo}],
            )
            await expect(page.locator("#photo")).to_contain_text("photo saved on this device")
            await page.screenshot(path=shots / "3-form-offline.png")
            await page.click("#submit")
            pending = page.locator('#list li[data-id="I-102"]')
            await expect(pending).to_contain_text("submitted")
            await expect(pending.locator(".badge")).to_have_text("saved on this device")
            await page.close()
            page = await context.new_page()
            await page.goto(url)
            pending = page.locator('#list li[data-id="I-102"]')
            await expect(pending.locator(".badge")).to_have_text("saved on this device")
            await expect(pending).to_contain_text("submitted")
            await expect(page.locator("#network")).to_have_text("offline")
            await page.screenshot(path=shots / "3-reopened-offline.png")
            assert not any("I-102 changed" in line for line in example.lines)

            # 4. Online again: "uploaded", and the office reports the change.
            online_at = time.perf_counter()
            await context.set_offline(False)
            await expect(pending.locator(".badge")).to_have_text("uploaded")
            uploaded = time.perf_counter() - online_at
            await example.printed("received I-102 changed", timeout=10)
            reported = time.perf_counter() - online_at
            change = example.line("received I-102 changed")
            assert "status: 'assigned' -> 'submitted'" in change, change
            assert "notes: None -> 'Generator fails to start; battery flat'" in change, change
            assert "condition: None -> 'poor'" in change, change
            assert "photo: None -> 'sha256:" in change, change
            await expect(page.locator("#summary")).to_contain_text("Everything is uploaded")
            await page.screenshot(path=shots / "4-uploaded.png")
            # The photo itself went to the relay: the office downloads and checks it.
            await page.click('#list li[data-id="I-102"] a')
            await expect(page.locator("#photo")).to_contain_text("photo uploaded")
            start = await example.type(f"photo I-102 {tmp_path / 'generator.png'}")
            await example.printed("photo of I-102", after=start)
            assert (tmp_path / "generator.png").read_bytes() == photo

            # 5. The same field written by the office and by the offline page: one value on
            # both sides after reconnecting, a conflict listed in the office; resolving it
            # there updates the page.
            await page.goto(url + "#I-103")
            await expect(page.locator("#title")).to_contain_text("School roof")
            await context.set_offline(True)
            await expect(page.locator("#network")).to_have_text("offline")
            start = await example.type('set I-103 notes "Roof checked by phone: fine"')
            await example.printed("set I-103 notes", after=start)
            await page.fill("textarea[name=notes]", "Two tiles missing over the gym")
            await page.click("button[value=save]")
            await expect(page.locator("#state")).to_have_text("saved on this device")
            start = len(example.lines)
            await context.set_offline(False)
            await expect(page.locator("#state")).to_have_text("uploaded")
            after = await example.printed("conflict I-103 notes: 2 values", after=start)
            await example.printed("keep one: resolve I-103 notes --pick N", after=after)
            shown = example.lines[after].split("'")[1]  # "   1. 'value' (who, when)  <- shown now"
            assert "shown now" in example.lines[after]
            await expect(page.locator("textarea[name=notes]")).to_have_value(shown)
            await expect(page.locator("#conflicts .conflict")).to_contain_text("notes")
            start = await example.type("conflicts")
            await example.printed("conflict I-103 notes: 2 values", after=start)
            await page.screenshot(path=shots / "5-conflict.png")
            start = await example.type("resolve I-103 notes --pick 2")
            await example.printed("resolved I-103 notes", after=start)
            chosen = example.line("resolved I-103 notes").split("= ", 1)[1].strip("'")
            assert chosen != shown
            await expect(page.locator("textarea[name=notes]")).to_have_value(chosen)
            await expect(page.locator("#conflicts .conflict")).to_have_count(0)
            start = await example.type("conflicts")
            await example.printed("no conflicts", after=start)
            await page.screenshot(path=shots / "5-resolved.png")
            assert errors == []
        finally:
            await context.close()
    print(
        f"browser test: {time.perf_counter() - began:.1f} s; after going online, "
        f"'uploaded' shown in {uploaded:.2f} s, the office reported the change in "
        f"{reported:.2f} s"
    )


def test_office_help() -> None:
    """``office.py --help`` names every command."""
    import subprocess  # noqa: PLC0415

    out = subprocess.run(
        [sys.executable, str(EXAMPLE / "office.py"), "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for command in ("watch", "assign", "list", "show", "set", "conflicts", "resolve", "photo"):
        assert command in out
