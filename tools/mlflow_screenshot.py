"""docs/mlflow-compare.png: MLflow's compare-runs page for two runs of a tiny pipeline, made by the
pipeline's own commands. tests/helpers/tiny_pipeline.py builds a repo with this project's train@,
evaluate@, baseline and compare stages on random crops (no face photos) and runs `dvc repro`
(one epoch); then `dvc exp run -n three-epochs -S train.epochs=3 -S train.patience=3`; then
`mlflow ui` serves the repo's store and headless Chromium, driven over the DevTools protocol,
opens the comparison of the two top-level runs, shows only the parameters and metrics that differ,
and saves the page. No artifact (such as plots/gallery.png, which holds face crops in a real run)
is opened.

Usage, from the repo root (needs `chromium`; about 2 minutes on 2 cores):
    python tools/mlflow_screenshot.py [docs/mlflow-compare.png]
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import tempfile
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers import mlflow_server, tiny_pipeline, ui  # noqa: E402

WIDTH, HEIGHT = 1400, 1500
# clicks in the page: close the assistant panel, fold the plots (they open on an arbitrary metric),
# and "Show diff only" for parameters, metrics and tags
TIDY = """
(() => {
  document.querySelector('[data-component-id="mlflow.assistant.chat_panel.close"]')?.click();
  [...document.querySelectorAll('[role="button"][aria-expanded="true"]')]
    .find(h => h.textContent.trim() === 'Visualizations')?.click();
  const diff = ['Parameters', 'Metrics', 'Tags'].map(
    s => document.querySelector(`button[role="switch"][aria-label="${s} - Show diff only"]`));
  diff.forEach(b => { if (b && b.getAttribute('aria-checked') !== 'true') b.click(); });
  return diff.filter(Boolean).length;
})()
"""


async def _capture(url: str, png: Path, profile: Path) -> None:
    import aiohttp

    process = await asyncio.create_subprocess_exec(
        ui.CHROMIUM, *ui.FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
        f"--window-size={WIDTH},{HEIGHT}", "about:blank",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        port_file = profile / "DevToolsActivePort"
        for _ in range(200):
            if port_file.is_file() and port_file.read_text().strip():
                break
            await asyncio.sleep(0.1)
        port = port_file.read_text().split()[0]
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
                target = next(t for t in await response.json() if t["type"] == "page")
            async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                ids = iter(range(1, 10_000))

                async def call(method: str, **params) -> dict:
                    key = next(ids)
                    await ws.send_json({"id": key, "method": method, "params": params})
                    async for message in ws:
                        data = json.loads(message.data)
                        if data.get("id") == key:
                            return data.get("result", {})
                    raise RuntimeError(f"DevTools closed during {method}")

                await call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT,
                           deviceScaleFactor=1, mobile=False)  # fmt: skip
                await call("Page.navigate", url=url)
                await asyncio.sleep(12)  # the app fetches the runs and draws the plot
                await call("Runtime.evaluate", expression=TIDY)
                await asyncio.sleep(3)
                shot = await call("Page.captureScreenshot", format="png")
        png.write_bytes(base64.b64decode(shot["data"]))
    finally:
        process.kill()
        await process.wait()


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        repo = tiny_pipeline.build(tmp / "repo")
        second = ["-n", "three-epochs", "-S", "train.epochs=3", "-S", "train.patience=3"]
        tiny_pipeline.run(["dvc", "exp", "run", *second], repo)
        runs = [r for r in tiny_pipeline.mlflow_runs(repo) if r.tags.get("role") == "comparison"]
        assert len(runs) == 2, runs
        options = ["--backend-store-uri", f"sqlite:///{repo / 'mlflow.db'}",
                   "--default-artifact-root", str(repo / "mlartifacts")]  # fmt: skip
        with mlflow_server.running(tmp, *options, command="ui") as url:
            experiment = mlflow_server.api(url, "experiments/get-by-name", experiment_name="faceswap-ela")
            query = "runs={}&experiments={}".format(
                quote(json.dumps([r.run_id for r in runs])),
                quote(json.dumps([experiment["experiment"]["experiment_id"]])),
            )
            out.parent.mkdir(parents=True, exist_ok=True)
            asyncio.run(_capture(f"{url}/#/compare-runs?{query}", out, tmp / "profile"))
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "mlflow-compare.png")
