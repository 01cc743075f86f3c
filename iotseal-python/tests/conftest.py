"""A real gateway for the tests: the `iotseal` binary (env IOTSEAL_BIN, else the workspace's
target/debug/iotseal), `gateway init` in a temporary directory, `gateway run` on a free
loopback port; devices registered with `iotseal device keygen` and `iotseal device add`;
readings read back through the admin API."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
import http.client
import urllib.parse
from pathlib import Path
from typing import List, Optional

import pytest

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent
WORKSPACE = PACKAGE.parent


def iotseal_bin() -> Path:
    env = os.environ.get("IOTSEAL_BIN")
    if env:
        return Path(env)
    target = os.environ.get("CARGO_TARGET_DIR")
    base = Path(target) if target else WORKSPACE / "target"
    return base / "debug" / "iotseal"


class Gateway:
    """One gateway directory and, while started, its process."""

    def __init__(self, directory: Path) -> None:
        self.bin = iotseal_bin()
        if not self.bin.is_file():
            pytest.fail(
                f"no iotseal binary at {self.bin}: build the workspace (cargo build) or set IOTSEAL_BIN"
            )
        self.dir = directory
        self.proc: Optional[subprocess.Popen] = None
        self.port = 0
        self.url = ""
        self.run("gateway", "init", "--dir", str(directory), "--alg", "ed25519")
        self.pins = directory / "gateway.pub.toml"
        self.token = (directory / "admin.token").read_text().strip()
        self.cert_pem = (directory / "tls-cert.pem").read_text()

    def run(self, *args: str) -> str:
        r = subprocess.run(
            [str(self.bin), *args], capture_output=True, text=True, timeout=60
        )
        if r.returncode != 0:
            raise AssertionError(f"iotseal {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
        return r.stdout

    def start(self, *extra: str) -> None:
        """Starts the gateway (again on the same port after a stop), with `extra` flags."""
        assert self.proc is None
        self.log = open(self.dir / "gateway.log", "ab")
        self.proc = subprocess.Popen(
            [
                str(self.bin),
                "gateway",
                "run",
                "--config",
                str(self.dir / "gateway.toml"),
                "--listen",
                f"127.0.0.1:{self.port}",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("listening on "):
            self.stop()
            raise AssertionError(f"gateway did not start: {line!r}, see {self.dir}/gateway.log")
        self.url = line.split("listening on ", 1)[1].strip()
        self.port = urllib.parse.urlsplit(self.url).port or 0

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
            self.log.close()

    def cli_conn(self) -> List[str]:
        return [
            "--pins",
            str(self.pins),
            "--token-file",
            str(self.dir / "admin.token"),
            "--gateway",
            self.url,
        ]

    def add_device(self, device_id: str, register: bool = True) -> Path:
        """An identity file for `device_id` (`device keygen`), registered (`device add`)."""
        key = self.dir / f"{device_id}.key"
        self.run("device", "keygen", "--id", device_id, "--out", str(key))
        if register:
            self.run("device", "add", "--key-file", str(key), *self.cli_conn())
        return key

    def revoke(self, device_id: str) -> None:
        self.run("device", "revoke", device_id, *self.cli_conn())

    def admin_get(self, path: str) -> object:
        """GET on the admin API, trusting the gateway's own certificate (not iotseal's pin
        code: the tests check that independently)."""
        ctx = ssl.create_default_context(cadata=self.cert_pem)
        ctx.check_hostname = False
        u = urllib.parse.urlsplit(self.url)
        conn = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=10)
        try:
            conn.request("GET", path, headers={"Authorization": f"Bearer {self.token}"})
            r = conn.getresponse()
            body = r.read()
            assert r.status == 200, (r.status, body)
            return json.loads(body)
        finally:
            conn.close()

    def readings(self, device_id: str) -> list:
        """The readings stored for a device, oldest first, with `msg_id` as an int (the admin
        API sends it as a decimal string: ids reach 2^62 - 1) and the values as floats (NaN
        and infinities come as "NaN", "Infinity", "-Infinity")."""
        rows = self.admin_get(
            f"/v1/devices/{urllib.parse.quote(device_id, safe='')}/readings?limit=100000"
        )
        assert isinstance(rows, list)
        for r in rows:
            assert isinstance(r["msg_id"], str) and r["msg_id"].isdigit(), r
            r["msg_id"] = int(r["msg_id"])
            r["values"] = [[name, float(v)] for name, v in r["values"]]
        return rows


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory):
    """A gateway shared by the tests that do not stop it."""
    gw = Gateway(tmp_path_factory.mktemp("gateway"))
    gw.start()
    yield gw
    gw.stop()


@pytest.fixture
def own_gateway(tmp_path: Path):
    """A gateway of this test alone (to stop and start it)."""
    gw = Gateway(tmp_path / "gw")
    gw.start()
    yield gw
    gw.stop()


@pytest.fixture
def python() -> str:
    return sys.executable


def wait_until(cond, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)
