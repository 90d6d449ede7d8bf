"""The `gateway` command as a newcomer uses it: `dev` (what `make run` runs), `broker`, `serve`,
and what every command answers to arguments, variables and paths it cannot use."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from gateway.cli import example_curl
from gateway.kafka.broker import port_in_use, wait_until_listening
from gateway.kafka.records import OutRecord
from gateway.kafka.spool import Spool
from gateway.vendors import registry
from gateway.vendors.caliper import EXAMPLE_ENVELOPE
from tests.support.gateway import ROOT, read_until
from tests.support.http import free_port
from tests.support.kafka import TopicReader

GATEWAY = [sys.executable, "-m", "gateway.cli"]


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


# --- gateway dev as a terminal runs it -----------------------------------------------------------

EXAMPLE_EVENT_ID = orjson.loads(EXAMPLE_ENVELOPE)["data"][0]["id"]


def without_gateway_variables() -> dict[str, str]:
    """This environment without any GATEWAY_* variable: a newcomer's shell."""
    return {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}


def free_admin_port() -> dict[str, str]:
    """Another gateway of the machine may hold the default admin port."""
    return {"GATEWAY_SERVER_ADMIN_PORT": str(free_port())}


def broker_processes(kafka_port: int) -> list[int]:
    """The live embedded brokers listening on `kafka_port` (as their command line says)."""
    listener = f"tcp://127.0.0.1:{kafka_port}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        if argv[0].endswith(b"tansu") and listener in argv:
            found.append(int(entry.name))
    return found


def start_dev(cwd: Path, log: Path, port: int, kafka_port: int) -> subprocess.Popen[bytes]:
    """`gateway dev` as a shell starts a foreground job: in a process group of its own, which
    is what a terminal's Ctrl-C signals (the whole group)."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [*GATEWAY, "dev", "--port", str(port), "--kafka-port", str(kafka_port)],
            cwd=cwd,
            env={**without_gateway_variables(), **free_admin_port()},
            stdout=out,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )


@pytest.fixture
def cleanup() -> Iterator[list[tuple[subprocess.Popen[bytes], int]]]:
    """Processes of `gateway dev` (and their broker's port) to kill if a test leaves them."""
    started: list[tuple[subprocess.Popen[bytes], int]] = []
    yield started
    for process, kafka_port in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
        for pid in broker_processes(kafka_port):  # an orphaned broker
            os.kill(pid, signal.SIGKILL)


def post_example(port: int) -> None:
    answer = httpx.post(
        f"http://127.0.0.1:{port}/v1/caliper",
        content=EXAMPLE_ENVELOPE,
        headers={"Authorization": "Bearer dev-token", "Content-Type": "application/json"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text


def test_ctrl_c_in_a_terminal_drains_the_gateway_then_stops_the_broker_quietly(
    tmp_path: Path, cleanup: list[tuple[subprocess.Popen[bytes], int]]
) -> None:
    port, kafka_port = free_port(), free_port()
    log = tmp_path / "dev.log"
    process = start_dev(tmp_path, log, port, kafka_port)
    cleanup.append((process, kafka_port))
    banner = read_until(process, "Ctrl-C stops both")
    (broker,) = broker_processes(kafka_port)
    post_example(port)

    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: SIGINT to every process of the job
    assert process.wait(timeout=30) == 0  # so `make run` reports no error
    assert process.stderr is not None
    printed = banner + process.stderr.read().decode() + log.read_text()
    assert "Connect to" not in printed  # the broker was not gone before the gateway
    lines = [orjson.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert [line["event"] for line in lines][-1] == "stopped", printed
    assert {line["level"] for line in lines} == {"info"}, printed
    assert not Path(f"/proc/{broker}").exists()  # stopped, and reaped
    assert not port_in_use(port)
    assert not port_in_use(kafka_port)


@pytest.mark.parametrize(
    "stop",
    [signal.SIGTERM, signal.SIGHUP],  # `kill`, a service manager; the terminal closing
    ids=["SIGTERM", "SIGHUP"],
)
def test_a_signal_to_the_gateway_alone_stops_the_broker_too(
    stop: signal.Signals, tmp_path: Path, cleanup: list[tuple[subprocess.Popen[bytes], int]]
) -> None:
    port, kafka_port = free_port(), free_port()
    process = start_dev(tmp_path, tmp_path / "dev.log", port, kafka_port)
    cleanup.append((process, kafka_port))
    read_until(process, "Ctrl-C stops both")
    assert broker_processes(kafka_port)

    process.send_signal(stop)
    assert process.wait(timeout=30) == 0
    assert broker_processes(kafka_port) == []  # no orphaned broker holding the port
    assert not port_in_use(kafka_port)


def test_dev_refuses_a_taken_http_port_before_starting_anything(tmp_path: Path) -> None:
    kafka_port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*GATEWAY, "dev", "--port", str(port), "--kafka-port", str(kafka_port)],
            cwd=tmp_path,
            env={**without_gateway_variables(), **free_admin_port()},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2
    assert result.stderr.startswith(f"gateway: port {port} on 127.0.0.1 is already in use")
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stdout == ""  # nothing started: no `started` line
    assert broker_processes(kafka_port) == []


@pytest.mark.parametrize(
    ("command", "defaults"),
    [
        ("dev", {"--port": "8080", "--kafka-port": "9092", "--log-format": "json"}),
        ("broker", {"--port": "9092"}),
    ],
)
def test_help_gives_every_option_with_its_default(command: str, defaults: dict[str, str]) -> None:
    result = subprocess.run(
        [*GATEWAY, command, "--help"],
        env={**os.environ, "COLUMNS": "100"},
        capture_output=True,
        text=True,
        check=True,
    )
    options = result.stdout.split("options:\n", 1)[1]
    # One entry per option: its line, and the lines its help wraps onto.
    entries = {
        entry.split()[0].rstrip(","): " ".join(entry.split())
        for entry in re.split(r"\n(?=  -)", options.strip("\n"))
    }
    del entries["-h"]
    assert set(defaults) <= set(entries), entries
    for entry in entries.values():
        assert "(default: " in entry, entry
    for option, default in defaults.items():
        assert f"(default: {default}" in entries[option], entries[option]


def test_the_tools_find_the_broker_of_gateway_dev_on_another_port(
    tmp_path: Path, cleanup: list[tuple[subprocess.Popen[bytes], int]]
) -> None:
    port, kafka_port = free_port(), free_port()
    process = start_dev(tmp_path, tmp_path / "dev.log", port, kafka_port)
    cleanup.append((process, kafka_port))
    banner = read_until(process, "Ctrl-C stops both")
    post_example(port)
    env = without_gateway_variables()

    def tailed(result: subprocess.CompletedProcess[str]) -> list[str]:
        assert result.returncode == 0, result.stderr
        return [orjson.loads(line)["data"]["vendor"]["event_id"] for line in result.stdout.split()]

    def tail(cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*GATEWAY, "tail"],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    # Where `gateway dev` runs, the plain command finds it.
    here = tail(tmp_path, env)
    assert tailed(here) == [EXAMPLE_EVENT_ID]
    assert f"127.0.0.1:{kafka_port}" in here.stderr  # it says which broker it took
    # Anywhere else, the line the banner prints.
    line = f"GATEWAY_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:{kafka_port} gateway tail"
    assert line in banner, banner
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    pasted = subprocess.run(  # noqa: S602  # the very line a newcomer pastes
        line,
        shell=True,
        cwd=elsewhere,
        env={**env, "PATH": path},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert tailed(pasted) == [EXAMPLE_EVENT_ID]
    # Explicit configuration wins over what `gateway dev` wrote.
    nowhere = f"127.0.0.1:{free_port()}"
    explicit = tail(tmp_path, {**env, "GATEWAY_KAFKA_BOOTSTRAP_SERVERS": nowhere})
    assert explicit.returncode == 1
    assert f"Kafka at {nowhere}" in explicit.stderr

    os.killpg(process.pid, signal.SIGINT)
    assert process.wait(timeout=30) == 0
    after = tail(tmp_path, env)
    assert f"127.0.0.1:{kafka_port}" not in after.stderr  # gone with it


def test_spool_outside_the_gateways_directory_says_where_it_looked(tmp_path: Path) -> None:
    looked = tmp_path.resolve() / "var" / "spool"
    for drain in ([], ["--drain"]):
        result = subprocess.run(
            [*GATEWAY, "spool", *drain],
            cwd=tmp_path,
            env=without_gateway_variables(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 1, result.stderr
        assert result.stdout == ""
        assert f"no spool directory {looked}" in result.stderr
        assert "server.state_dir" in result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "var").exists()  # --drain made none


# --- commands and their answers ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "valid"),
    [
        (["tail", "--vendor", "nosuch"], sorted(registry())),
        (["replay", "--vendor", "nosuch"], sorted(registry())),
        (["replay", "--reason", "bogus"], ["schema_violation", "unmappable", "malformed_payload"]),
    ],
    ids=" ".join,
)
def test_a_value_that_names_nothing_is_refused_with_the_valid_ones(
    args: list[str], valid: list[str]
) -> None:
    # Nothing listens there: only a refusal of the arguments answers quickly and with 2.
    env = {**os.environ, "GATEWAY_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}
    result = subprocess.run(
        [*GATEWAY, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2, result.stderr
    assert "invalid choice" in result.stderr
    assert all(value in result.stderr for value in valid), result.stderr


def test_replay_without_a_reachable_kafka_says_so_in_one_line() -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    result = subprocess.run(
        [*GATEWAY, "replay", "--dry-run"],
        env={**without_gateway_variables(), "GATEWAY_KAFKA_BOOTSTRAP_SERVERS": nowhere},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1  # as `gateway tail` answers it
    assert result.stderr.startswith(f"gateway: Kafka at {nowhere}: ")
    assert result.stderr.count("\n") == 1, result.stderr


def test_a_misspelt_gateway_variable_is_refused_at_start_up(tmp_path: Path) -> None:
    result = subprocess.run(
        [*GATEWAY, "serve", "--port", str(free_port())],
        env={
            **os.environ,
            "GATEWAY_CONFIG": str(ROOT / "gateway.dev.toml"),
            "GATEWAY_SERVER_STATE_DIR": str(tmp_path),
            "GATEWAY_KAFKA_BOOTSTRAP_SERVER": "kafka-1:9092",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "GATEWAY_KAFKA_BOOTSTRAP_SERVER " in result.stderr
    assert "did you mean GATEWAY_KAFKA_BOOTSTRAP_SERVERS" in result.stderr
    assert "kafka-1" not in result.stderr  # the name, never the value (it may be a secret)


def io_failures(tmp_path: Path) -> dict[str, tuple[list[str], dict[str, str], int]]:
    """Each command with a path it cannot use: (arguments, variables, exit code)."""
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    a_dir = tmp_path / "a-dir"
    a_dir.mkdir()
    under_a_file = str(a_file / "x")  # no one can create it, not even root
    config = {"GATEWAY_CONFIG": str(a_dir)}
    return {
        "schema --write": (["schema", "--write", f"{under_a_file}/x.json"], {}, 2),
        "validate": (["validate", under_a_file, "--vendor", "caliper"], {}, 2),
        "serve": (["serve", "--port", str(free_port())], config, 2),
        "dev": (
            ["dev", "--port", str(free_port()), "--kafka-port", str(free_port())],
            {"GATEWAY_SERVER_STATE_DIR": under_a_file, **free_admin_port()},
            2,
        ),
        "tail": (["tail"], config, 2),
        "replay": (["replay"], config, 2),
        "spool": (["spool"], config, 2),
        "spool --drain": (["spool", "--drain"], {"GATEWAY_SERVER_STATE_DIR": under_a_file}, 1),
        "inspera export": (["inspera", "export", "--test-id", "1"], config, 2),
    }


@pytest.mark.parametrize(
    "case",
    [
        "schema --write",
        "validate",
        "serve",
        "dev",
        "tail",
        "replay",
        "spool",
        "spool --drain",
        "inspera export",
    ],
)
def test_a_path_a_command_cannot_use_is_one_line_not_a_traceback(case: str, tmp_path: Path) -> None:
    args, variables, code = io_failures(tmp_path)[case]
    result = subprocess.run(
        [*GATEWAY, *args],
        cwd=tmp_path,
        env={**without_gateway_variables(), **variables},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == code, result.stderr
    assert result.stderr.startswith("gateway: ")
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stdout == ""


async def test_spool_drain_leaves_no_files_and_keeps_logs_out_of_its_report(
    broker: str, kafka: TopicReader, tmp_path: Path
) -> None:
    topic = f"edu.events.v1.drain-{tmp_path.name}"
    directory = tmp_path / "spool"
    left = Spool(directory, 1024 * 1024)  # what a gateway that died left behind
    await left.open()
    records = [OutRecord(topic, b"k", b'{"n": %d}' % n, ()) for n in range(3)]
    await left.append(records)
    await left.close()
    env = {
        **without_gateway_variables(),
        "GATEWAY_CONFIG": str(ROOT / "gateway.dev.toml"),
        "GATEWAY_KAFKA_BOOTSTRAP_SERVERS": broker,
        "GATEWAY_KAFKA_CANONICAL_TOPIC": topic,
        "GATEWAY_KAFKA_DEADLETTER_TOPIC": f"{topic}.deadletter",
        "GATEWAY_SERVER_STATE_DIR": str(tmp_path),
    }
    for forwarded in (3, 0):  # and once more, with nothing left
        result = await asyncio.to_thread(
            subprocess.run,
            [*GATEWAY, "spool", "--drain"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == [
            f"forwarded {forwarded} records to Kafka",
            f"spool {directory}: 0 records",
        ]
        assert sorted(p.name for p in directory.iterdir()) == []  # drained files are removed
    published = await kafka.read(topic, lambda rs: len(rs) >= 3)
    assert sorted(r.value for r in published) == sorted(r.value for r in records)
