"""The generation playground (``mame-eval playground``): MAM-E's interactive apps in Streamlit.

:func:`serve` starts ``python -m streamlit run mame_eval/playground/app.py`` bound to
127.0.0.1 unless another ``address`` is given; the models and folders travel in the
environment (:data:`ENV_MODEL` …). What the app does lives in :mod:`.session`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from mame_eval.errors import InputError

APP_PATH = Path(__file__).with_name("app.py")
DEFAULT_ADDRESS = "127.0.0.1"
DEFAULT_PORT = 8502

ENV_MODEL = "MAME_PLAYGROUND_MODEL"
ENV_INPAINT = "MAME_PLAYGROUND_INPAINT_MODEL"
ENV_FAMILY = "MAME_PLAYGROUND_FAMILY"
ENV_WORKSPACE = "MAME_PLAYGROUND_WORKSPACE"
ENV_DATA = "MAME_PLAYGROUND_DATA"


def serve_command(model: str | None = None, inpaint_model: str | None = None, *,
                  family: str | None = None, workspace: Path | str = "runs/playground",
                  data: Path | str | None = None, address: str = DEFAULT_ADDRESS,
                  port: int = DEFAULT_PORT) -> tuple[list[str], dict[str, str]]:
    """The ``streamlit run`` command line and environment of the playground."""
    from mame_eval.playground.session import model_family

    if not 1 <= int(port) <= 65535:
        raise InputError(f"--port {port}: expected 1 … 65535")
    model_family(model, family)  # a bad --family fails here, not in the browser
    if data is not None and not (Path(data) / "healthy").is_dir():
        raise InputError(f"--data {data}: expected a prepared dataset (with healthy/)")
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP_PATH),
           "--server.headless", "true",
           "--server.address", address,
           "--server.port", str(int(port)),
           "--server.fileWatcherType", "none",
           "--server.runOnSave", "false",
           "--browser.gatherUsageStats", "false",
           "--global.developmentMode", "false",
           "--client.toolbarMode", "minimal"]
    env = dict(os.environ)
    for key, value in ((ENV_MODEL, model), (ENV_INPAINT, inpaint_model), (ENV_FAMILY, family),
                       (ENV_WORKSPACE, str(Path(workspace).resolve())),
                       (ENV_DATA, str(Path(data).resolve()) if data else None)):
        env.pop(key, None)
        if value:
            env[key] = str(value)
    return cmd, env


def serve(model: str | None = None, inpaint_model: str | None = None, *,
          family: str | None = None, workspace: Path | str = "runs/playground",
          data: Path | str | None = None, address: str = DEFAULT_ADDRESS,
          port: int = DEFAULT_PORT, wait: bool = True, timeout: float = 60.0,
          log: Path | str | None = None) -> subprocess.Popen:
    """Start the playground server as a subprocess and return it (the caller owns it).

    With ``wait`` the call returns once the server answers its health check; ``log``
    receives the server's output (default: inherited).
    """
    cmd, env = serve_command(model, inpaint_model, family=family, workspace=workspace,
                             data=data, address=address, port=port)
    if not _port_free(address, port):
        raise InputError(f"--port {port}: {address}:{port} is already in use (another server "
                         "running? choose another --port)")
    handle = open(log, "ab") if log is not None else None  # noqa: SIM115 - closed below
    try:
        proc = subprocess.Popen(cmd, env=env, stdout=handle,
                                stderr=subprocess.STDOUT if handle else None,
                                stdin=subprocess.DEVNULL)
    finally:
        if handle is not None:
            handle.close()
    if wait:
        try:
            wait_until_ready(url(address, port), proc, timeout)
        except Exception:
            proc.kill()
            proc.wait()
            raise
    return proc


def url(address: str = DEFAULT_ADDRESS, port: int = DEFAULT_PORT) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}/"


def _port_free(address: str, port: int) -> bool:
    try:
        infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise InputError(f"--address {address!r}: unknown host name") from None
    family, socktype, proto, _, sockaddr = infos[0]
    with socket.socket(family, socktype, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(sockaddr)
        except OSError:
            return False
    return True


def wait_until_ready(address_url: str, proc: subprocess.Popen | None = None,
                     timeout: float = 60.0) -> None:
    """Poll Streamlit's health endpoint until it answers; InputError when the server exits
    first or ``timeout`` seconds pass."""
    health = address_url.rstrip("/") + "/_stcore/health"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise InputError(f"the playground server exited with status {proc.returncode} "
                             "before it was ready (see its output)")
        try:
            with urllib.request.urlopen(health, timeout=2) as resp:  # noqa: S310 - local
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.2)
    raise InputError(f"the playground server did not answer at {health} within "
                     f"{timeout:.0f} s")
