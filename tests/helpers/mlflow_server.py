"""A real `mlflow server` (or `mlflow ui`, or `mlflow models serve`) on a free loopback port, for the
tests that track into one, look at its UI or post to a served model: started and waited for
(running), stopped with its workers (stop), and its REST API (api)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

START_TIMEOUT_S = 90


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(process: subprocess.Popen, grace: float = 3) -> None:
    """SIGTERM the server's process group (it was started with start_new_session: uvicorn, its
    workers, MLflow's huey job consumers), then SIGKILL what is left after ``grace`` seconds (a
    clean shutdown takes MLflow about 10 s, and a test's throw-away store needs none)."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):  # helpers that outlived the leader
        os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def running(
    tmp_path: Path, *options: str, command: str = "server", env: dict[str, str] | None = None,
    skip_unless_started: bool = False,
) -> Iterator[str]:  # fmt: skip
    """`mlflow server` (or `mlflow ui`, `mlflow models serve`) with ``options`` on
    127.0.0.1:<free port>, its URL once /health answers; stopped, with its workers, on exit. The
    environment is this one without MLFLOW_* variables, with ``env`` and this Python's scripts
    (uvicorn) first on PATH. A server that does not start fails the test, or skips it with
    ``skip_unless_started``."""
    port = free_port()
    log = (tmp_path / f"{command.replace(' ', '-')}-{port}.log").open("w")
    argv = [sys.executable, "-m", "mlflow", *command.split(), "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1"]  # fmt: skip
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    environment["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    process = subprocess.Popen(
        [*argv, *options], stdout=log, stderr=subprocess.STDOUT, env=environment | (env or {}),
        start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    give_up = pytest.skip if skip_unless_started else pytest.fail

    def output() -> str:
        return Path(log.name).read_text()[-2000:]

    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                give_up(f"mlflow {command} exited with {process.returncode}: {output()}")
            try:
                if requests.get(f"{url}/health", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                give_up(f"mlflow {command} did not start in {START_TIMEOUT_S} s: {output()}")
            time.sleep(0.5)
        yield url
    finally:
        stop(process)
        log.close()
    assert process.poll() is not None, f"mlflow {command} outlived the test"


def api(url: str, endpoint: str, **query) -> dict:
    response = requests.get(f"{url}/api/2.0/mlflow/{endpoint}", params=query, timeout=30)
    assert response.ok, (endpoint, response.status_code, response.text[:500])
    return response.json()
