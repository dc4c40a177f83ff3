"""Checks in a real browser that the built site renders its maths: Debian's Chromium, headless,
loads pages of `docs/_build/html` from disk, runs the bundled MathJax, and the DOM must then
hold every formula typeset (an mjx-container each) and no MathJax error, with no error on the
console. Not part of `make test` (the project installs no browser): run it after `make docs`
where Chromium is installed (`apt-get install chromium`).

    python docs/check_render.py
"""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

PAGES = ("guides/samplers.html", "api/kernels.html", "api/control_variates.html", "index.html")


def check(site: pathlib.Path, chromium: str, profile: pathlib.Path) -> list[str]:
    """The problems found on `PAGES` (empty when every formula rendered and nothing failed)."""
    problems = []
    for page in PAGES:
        formulas = (site / page).read_text().count('class="math notranslate nohighlight"')
        if not formulas and page != "index.html":
            problems.append(f"{page}: no formula to typeset")
        command = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=15000",
            "--dump-dom",
            (site / page).as_uri(),
        ]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode != 0:
            problems.append(f"{page}: chromium failed: {proc.stderr[-500:]}")
            continue
        typeset = proc.stdout.count("<mjx-container")
        if typeset != formulas:
            problems.append(f"{page}: {typeset} of its {formulas} formulas typeset")
        if "<mjx-merror" in proc.stdout or "math-error" in proc.stdout:
            problems.append(f"{page}: MathJax reported an error")
        console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
        problems += [f"{page}: console: {line}" for line in console if re.search(r"error|uncaught|failed", line, re.I)]
    return problems


def main() -> int:
    site = pathlib.Path(__file__).parent / "_build" / "html"
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("no chromium on PATH (apt-get install chromium)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as profile:
        problems = check(site, chromium, pathlib.Path(profile))
    for p in problems:
        print(p)
    print(
        f"{len(PAGES)} pages: " + ("maths rendered, no console error" if not problems else f"{len(problems)} problems")
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
