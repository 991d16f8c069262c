"""The `dvc plots show` HTML renders every plot in headless Chromium without errors.

Needs Debian's chromium (`.ci/run` installs it) and npm (for the vega scripts: DVC's page loads
them from a CDN, which this offline check replaces with local copies).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path


from tests.helpers.project import run_cmd

VEGA_PACKAGES = {  # the versions DVC's page asks for
    "vega": ("5.20.2", "build/vega.min.js"),
    "vega-lite": ("5.2.0", "build/vega-lite.min.js"),
    "vega-embed": ("6.18.2", "build/vega-embed.min.js"),
}
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


def local_scripts(page: Path, workdir: Path) -> str:
    """DVC's page with its CDN scripts replaced by npm-installed copies."""
    npm = shutil.which("npm")
    assert npm, "npm is needed to fetch the vega scripts for an offline render"
    # --legacy-peer-deps: the exact versions DVC loads from the CDN declare conflicting peers
    run_cmd(
        [
            npm,
            "install",
            "--silent",
            "--no-audit",
            "--no-fund",
            "--legacy-peer-deps",
            "--prefix",
            str(workdir),
            *[f"{name}@{version}" for name, (version, _) in VEGA_PACKAGES.items()],
        ],
        workdir,
    )
    html = page.read_text()
    for name, (version, build) in VEGA_PACKAGES.items():
        url = f"https://cdn.jsdelivr.net/npm/{name}@{version}"
        assert url in html, f"DVC's page no longer loads {url}; update VEGA_PACKAGES"
        html = html.replace(url, (workdir / "node_modules" / name / build).as_uri())
    return html


def test_plots_page_renders_every_plot_in_headless_chromium(project, tmp_path):
    chromium = shutil.which("chromium")
    assert chromium, "install Debian's chromium package (apt-get install chromium) for this check"
    repo = project
    run_cmd(["dvc", "plots", "show", "--out", "dvc_plots"], repo)
    page = tmp_path / "offline.html"
    page.write_text(local_scripts(repo / "dvc_plots/index.html", tmp_path))
    proc = subprocess.run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=10000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    dom = proc.stdout
    assert proc.returncode == 0 and dom, f"chromium failed ({proc.returncode}): {proc.stderr[-3000:]}"
    expected = len(re.findall(r"vegaEmbed\(", page.read_text()))
    assert expected >= 3  # loss per step, loss per epoch, EM/F1
    assert dom.count('class="marks"') >= expected, dom[-2000:]  # vega drew every chart
    console_errors = [line for line in proc.stderr.splitlines() if "CONSOLE" in line and "rror" in line]
    assert console_errors == []
