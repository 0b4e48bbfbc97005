"""How long one update of the live report takes in a browser (issue 30's target: one animation
frame, 16 ms, for a 70B model): Llama-3.1-405B, both stages, two chips; 200 changes of the batch
control, each recomputing every op, the graph's colours, the memory and the URL.

    python bench/live_report.py [--browser /usr/bin/chromium]

Needs playwright (the test extra) and a Chromium; not a test.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UPDATES = 200


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--browser", default=shutil.which("chromium"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright
    with tempfile.TemporaryDirectory() as tmp:
        page_file = Path(tmp) / "405b.html"
        subprocess.run([sys.executable, "-m", "costdsl", "report", "llama-3.1-405b", "--hw",
                        "nvidia-h100-sxm,nvidia-a100-80gb", "--live", "-o", str(page_file)],
                       cwd=ROOT, check=True, capture_output=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.browser, args=["--no-sandbox"])
            page = browser.new_page()
            for stage in ("prefill", "decode"):
                page.goto(f"{page_file.as_uri()}#stage={stage}")
                ms = page.evaluate(f"""() => {{
                    const el = document.getElementById('c-batch');
                    const start = performance.now();
                    for (let i = 1; i <= {UPDATES}; i++) {{
                        el.value = String(i); el.dispatchEvent(new Event('change'));
                    }}
                    return (performance.now() - start) / {UPDATES};
                }}""")
                print(f"Llama-3.1-405B {stage}: {ms:.2f} ms per update "
                      f"({page_file.stat().st_size / 1e6:.2f} MB page)")
            browser.close()


if __name__ == "__main__":
    main()
