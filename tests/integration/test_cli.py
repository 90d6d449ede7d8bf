"""The `gateway` command as a newcomer uses it: `dev` (what `make run` runs), `broker`, `serve`."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from gateway.broker import port_in_use, wait_until_listening
from gateway.cli import example_curl
from tests.integration.conftest import ROOT, free_port

GATEWAY = [sys.executable, "-m", "gateway.cli"]


def read_until(process: subprocess.Popen[bytes], marker: str, within: float = 30) -> str:
    """What the process printed on stderr up to and including `marker`."""
    assert process.stderr is not None
    fd = process.stderr.fileno()
    seen = b""
    deadline = time.monotonic() + within
    while marker.encode() not in seen:
        if time.monotonic() > deadline:
            raise AssertionError(f"{marker!r} never printed; got:\n{seen.decode()}")
        readable, _, _ = select.select([fd], [], [], 0.2)
        if readable:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"exited before printing {marker!r}:\n{seen.decode()}")
            seen += chunk
    return seen.decode()


def test_dev_prints_a_curl_that_works_and_ctrl_c_stops_both() -> None:
    port, kafka_port = free_port(), free_port()
    process = subprocess.Popen(
        [*GATEWAY, "dev", "--port", str(port), "--kafka-port", str(kafka_port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        banner = read_until(process, "Ctrl-C stops both")
        assert f"listening on http://127.0.0.1:{port}" in banner
        curl = re.search(r"^curl .*?--data '.*?'$", banner, re.MULTILINE | re.DOTALL)
        assert curl is not None, banner
        result = subprocess.run(  # noqa: S602  # the very command a newcomer pastes
            curl.group(0), shell=True, capture_output=True, text=True, check=True, timeout=30
        )
        assert result.stdout.startswith("HTTP/1.1 200"), result.stdout
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) in (0, 130)  # 130: the conventional exit after Ctrl-C
        assert not port_in_use(port)
        assert not port_in_use(kafka_port)  # the broker went with it
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stderr is not None
        process.stderr.close()


def test_broker_runs_in_the_foreground_until_interrupted() -> None:
    port = free_port()
    process = subprocess.Popen(
        [*GATEWAY, "broker", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_listening(port)
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)
        assert not port_in_use(port)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_serve_fails_loudly_on_an_invalid_setting(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("[kafka]\nlinger_ms = 'soon'\n")
    result = subprocess.run(
        [*GATEWAY, "serve"],
        env={**os.environ, "GATEWAY_CONFIG": str(config)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "kafka.linger_ms must be of type int" in result.stderr


def test_version() -> None:
    result = subprocess.run([*GATEWAY, "--version"], capture_output=True, text=True, check=True)
    assert re.fullmatch(r"gateway \d+\.\d+\.\d+\n", result.stdout)


def test_readme_shows_the_curl_that_dev_prints() -> None:
    readme = (ROOT / "README.md").read_text()
    assert example_curl(8080) in readme
    assert "make run" in readme
    assert "make test" in readme
