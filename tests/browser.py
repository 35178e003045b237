"""Headless Chromium for tests: does a page's <video> really play?

``video_playback(page)`` opens ``page`` (a file) inside a probe page in the
same folder, finds its first ``<video>``, waits until a frame is decoded,
draws that frame onto a canvas and reports ``duration``, the video size and
the drawn frame's mean brightness and spread, or the media error code. The
result comes back through ``--dump-dom``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--allow-file-access-from-files", "--autoplay-policy="
         "no-user-gesture-required"]

PROBE = """<!doctype html><html><body><pre id="result">pending</pre>
<iframe id="page" src="PAGE" width="1000" height="800"></iframe>
<script>
function report(o) { document.getElementById('result').textContent = 'RESULT ' + JSON.stringify(o); }
document.getElementById('page').addEventListener('load', function () {
  var doc = this.contentDocument, v = doc && doc.querySelector('video');
  if (!v) { report({error: 'no <video> in the page'}); return; }
  // 'seeked' can fire before the frame there is ready to draw (a loaded machine): until
  // it is (readyState >= 2 and the canvas gets opaque pixels), ask again a little later
  function grab(tries) {
    tries = tries || 0;
    var c = document.createElement('canvas'); c.width = v.videoWidth; c.height = v.videoHeight;
    var g = c.getContext('2d'), drawn = false;
    if (v.readyState >= 2) { g.drawImage(v, 0, 0); }
    var d = g.getImageData(0, 0, c.width, c.height).data, s = 0, s2 = 0, n = d.length / 4;
    for (var i = 0; i < d.length; i += 4) {
      var y = (d[i] + d[i+1] + d[i+2]) / 3; s += y; s2 += y * y; drawn = drawn || d[i+3] > 0;
    }
    if (!drawn && tries < 200) { setTimeout(function () { grab(tries + 1); }, 25); return; }
    var m = s / n;
    report({duration: v.duration, width: v.videoWidth, height: v.videoHeight, drawn: drawn,
            mean: m, std: Math.sqrt(Math.max(0, s2 / n - m * m)), src: v.currentSrc.split('/').pop()});
  }
  v.addEventListener('error', function () { report({error: 'media error ' + (v.error && v.error.code)}); });
  if (v.error) { report({error: 'media error ' + v.error.code}); return; }
  // seek into the video and draw the frame there once it is decoded
  v.addEventListener('seeked', function () { grab(0); }, {once: true});
  function seek() { v.currentTime = Math.min(0.5, v.duration / 2); }
  v.muted = true;
  if (v.readyState >= 1) seek(); else { v.addEventListener('loadedmetadata', seek, {once: true}); v.load(); }
});
</script></body></html>"""


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def run_chromium(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout)


def video_playback(page: Path) -> dict:
    """What Chromium makes of the first <video> of ``page`` (see the module docstring)."""
    probe = page.parent / "_videoprobe.html"
    probe.write_text(PROBE.replace("PAGE", page.name))
    try:
        # media loads on real threads that virtual time does not wait for: on a loaded
        # machine the page may still say "pending" when the DOM is dumped; ask again
        for budget in (15000, 30000, 60000):
            r = run_chromium([f"--virtual-time-budget={budget}", "--dump-dom", probe.as_uri()])
            m = re.search(r"RESULT (\{.*?\})</pre>", r.stdout)
            if m:
                return json.loads(m.group(1).replace("&quot;", '"'))
    finally:
        probe.unlink()
    shown = re.search(r'<pre id="result">(.*?)</pre>', r.stdout)
    return {"error": f"no result (exit {r.returncode}, page said "
                     f"{shown.group(1) if shown else 'nothing'}): {r.stderr[-300:]}"}


def screenshot(page: Path, png: Path, size=(1200, 1000)) -> Path:
    r = run_chromium([f"--window-size={size[0]},{size[1]}", "--virtual-time-budget=8000",
                      f"--screenshot={png}", page.as_uri()])
    assert r.returncode == 0 and png.is_file(), r.stderr[-1000:]
    return png
