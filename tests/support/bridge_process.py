"""The comment bridge run as a real process (``bin/ccci bridge``), for tests and the demo.

    with BridgeProcess(forge, drone, state_dir, secret="s") as bridge:
        forge.deliver_comment(bridge.hook_url, "s", ...)
        bridge.kill()        # SIGKILL, as a crash
        bridge.start()       # again, same port and state dir
        bridge.log()         # everything it wrote to stderr so far

``forge`` and ``drone`` are the doubles (or anything with ``base_url`` and ``token``);
``settings`` adds or overrides ``CCCI_BRIDGE_*`` variables.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class BridgeProcess:
    def __init__(self, forge: Any, drone: Any, state_dir: Path, secret: str, **settings: str):
        self.port = free_port()
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(mode=0o700, exist_ok=True)  # made on purpose, as ci_host does
        self.log_path = self.state_dir.parent / f"bridge-{self.port}.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CCCI_BRIDGE_")},
            "CCCI_BRIDGE_SECRET": secret,
            "CCCI_BRIDGE_FORGE_URL": forge.base_url,
            "CCCI_BRIDGE_FORGE_TOKEN": forge.token,
            "CCCI_BRIDGE_DRONE_URL": drone.base_url,
            "CCCI_BRIDGE_DRONE_TOKEN": drone.token,
            "CCCI_BRIDGE_STATE_DIR": str(self.state_dir),
            "CCCI_BRIDGE_LISTEN": f"127.0.0.1:{self.port}",
            "CCCI_BRIDGE_BACKOFF": "0.05",
            "CCCI_BRIDGE_TIMEOUT": "3",
            **{f"CCCI_BRIDGE_{k.upper()}": v for k, v in settings.items()},
        }
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def hook_url(self) -> str:
        return f"{self.url}/hook"

    def start(self, timeout: float = 20.0) -> BridgeProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bin" / "ccci"), "bridge"],
            env=self.env,
            stdout=log,
            stderr=log,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the bridge did not start:\n{self.log()}")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> BridgeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
