#!/usr/bin/env python3
"""Loads an `l7tap heatmap --out FILE.html` page in headless Chromium and checks it.

Usage: python3 ci/heatmap-check.py PAGE.html [--expect-rows N]

Checks: the page loads with no console errors or uncaught exceptions (Chromium's console log on
stderr); no request leaves the page (it references no http(s) URL); hovering a cell shows a
tooltip; dragging a rectangle over the whole grid lists the embedded requests (at least
--expect-rows rows, default 1). The interactions are driven by a script appended to a temporary
copy of the page, whose findings are read back from the DOM (`--dump-dom`).
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

# Runs before the page's own script: records console errors and uncaught exceptions.
CAPTURE = """
<script>
window.__problems = [];
window.addEventListener('error', e => window.__problems.push('uncaught: ' + e.message));
window.addEventListener('unhandledrejection', e => window.__problems.push('unhandled rejection: ' + e.reason));
const __consoleError = console.error;
console.error = function () { window.__problems.push('console.error: ' + Array.from(arguments).join(' ')); __consoleError.apply(console, arguments); };
</script>
"""

DRIVER = """
<script>
(function () {
  const result = {};
  try {
    const box = canvas.getBoundingClientRect();
    const at = (type, x, y, target) => (target || canvas).dispatchEvent(new MouseEvent(type,
      { clientX: box.left + x, clientY: box.top + y, bubbles: true }));
    let hoverCol = 0, hoverRow = 0;
    outer: for (let c = 0; c < cols; c++) for (let r = 0; r < rows; r++)
      if (D.counts[c][r] > 0) { hoverCol = c; hoverRow = r; break outer; }
    at('mousemove', L + hoverCol * cw + cw / 2, T + (rows - 1 - hoverRow) * ch + ch / 2);
    result.tooltip = tip.style.display === 'block' ? tip.textContent : '';
    at('mousedown', L + 1, T + 1);
    at('mousemove', L + cols * cw - 1, T + rows * ch - 1);
    at('mouseup', L + cols * cw - 1, T + rows * ch - 1, window);
    result.rows = document.querySelectorAll('#sel tr').length - 1;
    result.heading = (document.querySelector('#sel div') || {}).textContent || '';
  } catch (e) {
    result.error = String(e);
  }
  result.problems = window.__problems;
  const out = document.createElement('pre');
  out.id = 'check-result';
  out.textContent = JSON.stringify(result);
  document.body.appendChild(out);
})();
</script>
"""


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("heatmap-check: no chromium found (apt-get install -y chromium)")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("page")
    parser.add_argument("--expect-rows", type=int, default=1)
    args = parser.parse_args()
    html = open(args.page, encoding="utf-8").read()
    failures = []
    if re.search(r"https?://", html):
        failures.append("the page references an http(s) URL")
    with tempfile.TemporaryDirectory() as tmp:
        page = os.path.join(tmp, "page.html")
        with open(page, "w", encoding="utf-8") as f:
            f.write(html.replace("<head>", "<head>" + CAPTURE, 1).replace("</body>", DRIVER + "</body>"))
        run = subprocess.run(
            [find_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
             "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
             "--user-data-dir=" + os.path.join(tmp, "profile"),
             "--dump-dom", "file://" + page],
            capture_output=True, text=True, timeout=120)
    # Older headless modes also log console messages to stderr.
    errors = [line for line in run.stderr.splitlines() if ":CONSOLE" in line and "ERROR" in line or "Uncaught" in line]
    if errors:
        failures.append("console errors:\n  " + "\n  ".join(errors))
    match = re.search(r'<pre id="check-result">(.*?)</pre>', run.stdout, re.S)
    if not match:
        failures.append("the driver script did not run (no result in the DOM)")
        result = {}
    else:
        import html as html_lib
        import json
        result = json.loads(html_lib.unescape(match.group(1)))
    if result.get("problems"):
        failures.append("console errors / exceptions in the page: " + "; ".join(result["problems"]))
    if result.get("error"):
        failures.append("driver error: " + result["error"])
    if result and not result.get("tooltip"):
        failures.append("hovering a non-empty cell showed no tooltip")
    if result and result.get("rows", 0) < args.expect_rows:
        failures.append(f"drag-select listed {result.get('rows')} rows, expected >= {args.expect_rows}")
    print("heatmap-check:", result)
    if failures:
        print("FAILED:\n" + "\n".join(failures))
        sys.exit(1)
    print("OK: loads without console errors, hover and drag-select work")


if __name__ == "__main__":
    main()
