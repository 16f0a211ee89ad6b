"""report.html in a real browser: headless Chromium driven over the DevTools protocol.

Run with ``pytest -m browser`` (``make test-browser`` installs Debian's chromium first). Skipped
when /usr/bin/chromium is absent. The DevTools client is a few lines of stdlib websocket code,
so no browser driver package is needed.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from varcomp.analyses.report import write_report

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")]
TIMEOUT = 60.0


class DevTools:
    """A minimal Chrome DevTools protocol client over one websocket (RFC 6455, text frames)."""

    def __init__(self, url: str):
        u = urllib.parse.urlparse(url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=TIMEOUT)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {u.path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                          .encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(4096)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        self.next_id, self.events = 0, []

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buf)))
            if not chunk:
                raise ConnectionError("DevTools closed the connection")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _send(self, text: str, opcode: int = 0x1) -> None:
        data = text.encode()
        n = len(data)
        head = bytes([0x80 | opcode])
        head += (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n)
                 if n < 65536 else bytes([0x80 | 127]) + struct.pack("!Q", n))
        mask = os.urandom(4)
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _receive(self) -> dict:
        message = b""
        while True:
            b0, b1 = self._exact(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._exact(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._exact(8))[0]
            data = self._exact(n)
            opcode = b0 & 0x0F
            if opcode == 0x8:
                raise ConnectionError("DevTools closed the websocket")
            if opcode in (0x9, 0xA):  # ping / pong
                continue
            message += data
            if b0 & 0x80:
                return json.loads(message)

    def call(self, method: str, **params) -> dict:
        """Send a command and wait for its result (events meanwhile are kept)."""
        self.next_id += 1
        self._send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = self._receive()
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, method: str) -> dict:
        """The first event ``method`` (already received or arriving within the timeout)."""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            for e in self.events:
                if e.get("method") == method:
                    return e
            self.events.append(self._receive())
        raise TimeoutError(method)

    def js(self, expression: str):
        """Evaluate ``expression`` in the page; its JSON value."""
        out = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                        awaitPromise=True)
        assert "exceptionDetails" not in out, out["exceptionDetails"]
        return out["result"].get("value")

    def click(self, x: float, y: float) -> None:
        """A real left click (mouse down and up) at viewport coordinates."""
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left",
                      clickCount=1)

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries seen so far."""
        out = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.exceptionThrown":
                out.append(json.dumps(p["exceptionDetails"])[:300])
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(json.dumps(p.get("args"))[:300])
            elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
                out.append(f"{p['entry'].get('source')}: {p['entry'].get('text')}"[:300])
        return out


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium with remote debugging on a free port; yields the page's DevTools."""
    profile = tmp_path / "profile"
    log = (tmp_path / "chromium.log").open("w")
    proc = subprocess.Popen(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-extensions", "--enable-logging=stderr", "--v=0",
         f"--user-data-dir={profile}", "--remote-debugging-port=0", "--window-size=1280,900",
         "about:blank"], stdout=subprocess.DEVNULL, stderr=log)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + TIMEOUT
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            assert proc.poll() is None, (tmp_path / "chromium.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            pages = [t for t in json.load(r) if t["type"] == "page"]
        tools = DevTools(pages[0]["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Log"):
            tools.call(f"{domain}.enable")
        yield tools
        tools.sock.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def check_page(tools: DevTools, page: Path, screenshot: Path) -> dict:
    """Open ``page``, open every <details> by clicking its summary, check images and errors,
    save a full-page screenshot; returns what was seen."""
    tools.call("Page.navigate", url=page.as_uri())
    tools.wait_for("Page.loadEventFired")
    n_details = tools.js("document.querySelectorAll('details').length")
    for i in range(n_details):
        was_open = tools.js(f"document.querySelectorAll('details')[{i}].open")
        # an open section must close on a click and open again on the next
        for want in ([False, True] if was_open else [True]):
            box = tools.js(f"""(() => {{
                const s = document.querySelectorAll('details')[{i}].querySelector('summary');
                s.scrollIntoView({{block: 'center'}});
                const r = s.getBoundingClientRect();
                return [r.left + 20, r.top + r.height / 2];
            }})()""")
            tools.click(*box)
            state = tools.js(f"""(() => {{
                const d = document.querySelectorAll('details')[{i}];
                const body = [...d.children].filter(c => c.tagName !== 'SUMMARY');
                return {{open: d.open, id: d.id,
                         height: Math.max(0, ...body.map(c => c.getBoundingClientRect().height))}};
            }})()""")
            name = state["id"] or i
            assert state["open"] == want, f"<details> {name} did not {'open' if want else 'close'}"
        assert state["height"] > 0, f"<details> {name} opened with nothing shown"
    images = tools.js("""new Promise(done => {
        const t0 = Date.now();
        const poll = () => {
            const imgs = [...document.images];
            if (imgs.every(i => i.complete) || Date.now() - t0 > 20000)
                done(imgs.map(i => ({alt: i.alt, w: i.naturalWidth, h: i.naturalHeight})));
            else setTimeout(poll, 50);
        };
        poll();
    })""")
    broken = [i["alt"] for i in images if not (i["w"] > 0 and i["h"] > 0)]
    assert not broken, f"images that do not decode: {broken}"
    assert tools.js("getComputedStyle(document.querySelector('main')).maxWidth") == "1080px"
    size = tools.call("Page.getLayoutMetrics")["cssContentSize"]
    shot = tools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                      clip={"x": 0, "y": 0, "width": size["width"],
                            "height": min(size["height"], 16000), "scale": 1})
    screenshot.write_bytes(base64.b64decode(shot["data"]))
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    errors = tools.errors()
    assert not errors, f"browser console errors: {errors}"
    return {"details": n_details, "images": len(images)}


def test_univariate_four_forms_in_chromium(browser, tmp_path):
    """The one-way report with four forms: every figure decodes, every section opens on a
    click (the four fits and the comparison's table), and the console stays clean."""
    from test_report import FORMS, dyestuff_result

    page = write_report(tmp_path / "oneway" / "report.html", dyestuff_result(FORMS))
    seen = check_page(browser, page, tmp_path / "oneway.png")
    assert seen["details"] == 5
    assert seen["images"] >= 4 * 5 + 1


def test_multivariate_in_chromium(browser, tmp_path):
    """The bivariate report (matrices, two outcomes per figure) renders the same way."""
    from test_report import fake_mv_fit, fake_result

    from varcomp.models import load

    data = load("gcsemv")
    result = fake_result(data, {"sufficient": fake_mv_fit(data)},
                         skipped={"marginal": "68 blocks"})
    page = write_report(tmp_path / "mv" / "report.html", result)
    seen = check_page(browser, page, tmp_path / "multivariate.png")
    assert seen["details"] == 1
    assert seen["images"] >= 5


def test_the_checks_can_fail(browser, tmp_path):
    """The browser checks catch what they are for: a script error, a PNG that does not decode
    and a <details> whose summary has been disabled are each reported."""
    from test_report import dyestuff_result

    page = write_report(tmp_path / "r" / "report.html", dyestuff_result())
    html = page.read_text(encoding="utf-8")
    broken = {
        "console": html.replace("</main>", "<script>undefinedFunction()</script></main>"),
        "decode": html.replace("data:image/png;base64,iVBOR", "data:image/png;base64,AAAA", 1),
        "details": html.replace("</style>", "summary { pointer-events: none; }</style>"),
    }
    for what, text in broken.items():
        bad = tmp_path / f"{what}.html"
        bad.write_text(text, encoding="utf-8")
        with pytest.raises(AssertionError) as err:
            check_page(browser, bad, tmp_path / f"{what}.png")
        browser.events.clear()
        expected = {"console": "console errors", "decode": "do not decode",
                    "details": "did not"}[what]
        assert expected in str(err.value), (what, str(err.value)[:300])


def _escaped_in_page(tools: DevTools, payload: str) -> None:
    """``payload`` reads as text in the page and made no element: no script, no injected img
    or ``#injected`` element."""
    assert tools.js(f"document.body.textContent.includes({json.dumps(payload)})")
    assert tools.js("document.querySelectorAll('script').length") == 0
    assert tools.js("document.querySelectorAll('img[src=\"x\"], #injected').length") == 0


def test_reliability_report_in_chromium(browser, tmp_path):
    """`varcomp reliability`'s report.html (Shrout & Fleiss under hostile column names): the
    reliability section and its D-study figure load, the column names show as text."""
    import pandas as pd
    from test_reliability import HOSTILE, SF

    from varcomp.analyses.reliability import reliability, write_reliability

    df = pd.read_csv(SF).rename(columns=HOSTILE)
    rel = reliability(df, target=HOSTILE["target"], rater=HOSTILE["judge"],
                      response=HOSTILE["rating"], draws=300, tune=300, chains=2, seed=1)
    out = write_reliability(rel, tmp_path / "rel")
    seen = check_page(browser, out / "report.html", tmp_path / "reliability.png")
    assert seen["details"] == 1 and seen["images"] >= 5  # the D study's and the fit's 4
    heads = browser.js("[...document.querySelectorAll('#reliability ~ h3')]"
                       ".map(h => h.textContent)")
    assert heads[:3] == ["Intraclass correlations", "G study", "D study"]
    assert browser.js("document.querySelector('img[alt^=\"D study\"]').naturalWidth") > 0
    reach = browser.js("document.getElementById('reliability-reach').textContent")
    assert f"Φ: {rel.reach()['phi']} raters" in reach
    assert f"Eρ²: {rel.reach()['erho2']} raters" in reach
    for payload in (HOSTILE["target"], HOSTILE["judge"]):
        _escaped_in_page(browser, payload)


def test_plan_page_in_chromium(browser, tmp_path):
    """plan.html: its sections render, a hostile ICC description shows as text."""
    from varcomp.analyses.plan import plan, write_plan

    p = plan(size=20, cv=0.5, effect=0.3, icc_prior="beta:2:18")
    p["icc"] = '<script>document.title = "pwned"</script><b id="injected">ICC</b>'
    out = write_plan(p, tmp_path / "plan")
    check_page(browser, out / "plan.html", tmp_path / "plan.png")
    assert browser.js("document.querySelector('h1').textContent") == "Cluster-trial plan"
    assert browser.js("document.querySelector('h2').textContent").startswith("Assurance")
    assert browser.js("document.querySelectorAll('tbody tr').length") > 3
    _escaped_in_page(browser, p["icc"])
