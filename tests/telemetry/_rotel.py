"""A real OpenTelemetry collector for end-to-end tests: rotel.

rotel is a collector written in Rust; its PyPI wheel (in the dev extra, installed like
any other test dependency) ships the binary. :class:`Rotel` starts one on 127.0.0.1 at
free ports in its own directory, and reads back what it received from its debug
exporter (``--debug-log traces --debug-log-verbosity detailed`` prints each span with
its resource, kind, parent and attributes). It cannot show request headers: tests of
headers keep the in-repo receivers (``_receiver.py``).

    with Rotel(tmp_path) as collector:
        exporter = OTLPSpanExporter(endpoint=collector.http_endpoint)
        ...
        spans = collector.wait_for(lambda spans: len(spans) >= 2)

or, as a fixture, ``from tests.telemetry._rotel import rotel`` in a test module (or a
conftest.py) and take ``rotel`` as an argument: one collector per test, in its tmp_path.

Stopped by its process id (SIGTERM, then SIGKILL), never by name.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

STARTUP_WAIT = 30.0  # seconds: a cold start on a loaded 2-core machine
_VALUE = re.compile(r"(Str|Int|Bool|Double|Bytes)\((.*?)\)(?=, (?:Str|Int|Bool|Double|Bytes)\(|$)")


@dataclass
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: str  # SPAN_KIND_SERVER, SPAN_KIND_INTERNAL, ...
    attributes: dict[str, Any] = field(default_factory=dict)
    resource: dict[str, Any] = field(default_factory=dict)
    scope: str = ""


@pytest.fixture
def rotel(tmp_path: Path) -> Iterator[Rotel]:
    """A running collector for one test, stopped after it."""
    with Rotel(tmp_path / "rotel") as collector:
        yield collector


def agent_path() -> Path:
    """The rotel binary the wheel installed (an error naming the dev extra if absent)."""
    try:
        import rotel
    except ImportError:
        raise RuntimeError("rotel is missing: pip install -e '.[dev]'") from None
    path = Path(rotel.__file__).parent / "rotel-agent"
    if not path.exists():
        raise RuntimeError(f"the rotel wheel has no agent binary at {path}")
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Rotel:
    """One rotel process; ``http_endpoint`` and ``grpc_endpoint`` are where to export."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.output = directory / "rotel-debug.log"
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.http_endpoint = f"http://127.0.0.1:{self.http_port}/v1/traces"
        self.grpc_endpoint = f"http://127.0.0.1:{self.grpc_port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> Rotel:
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            str(agent_path()),
            "start",
            "--exporter",
            "blackhole",
            "--debug-log",
            "traces",
            "--debug-log-verbosity",
            "detailed",
            "--disable-batching",  # spans appear as they arrive
            "--otlp-grpc-endpoint",
            f"127.0.0.1:{self.grpc_port}",
            "--otlp-http-endpoint",
            f"127.0.0.1:{self.http_port}",
            "--pid-file",
            str(self.directory / "rotel.pid"),
            "--log-file",
            str(self.directory / "rotel.log"),
        ]
        with self.output.open("wb") as out:
            self._process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, cwd=self.directory
            )
        try:
            wait_listening(self._process, (self.http_port, self.grpc_port), self.output)
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            stop_by_pid(process, signal.SIGTERM)

    def __enter__(self) -> Rotel:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def spans(self) -> list[ReceivedSpan]:
        """Every span received so far, parsed from the debug exporter's output."""
        text = self.output.read_text(errors="replace")
        return parse(text[: text.rfind("\n") + 1])  # a line still being written waits

    def wait_for(
        self, done: Callable[[list[ReceivedSpan]], bool], timeout: float = 60.0
    ) -> list[ReceivedSpan]:
        """The spans received once ``done`` holds for them, or when ``timeout`` runs out
        (the caller's assertion then says what is missing)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.spans()
            if done(found) or time.monotonic() > deadline:
                return found
            time.sleep(0.1)


def wait_listening(
    process: subprocess.Popen[bytes],
    ports: tuple[int, ...],
    output: Path,
    timeout: float = STARTUP_WAIT,
) -> None:
    """Returns once every port accepts connections on 127.0.0.1; RuntimeError (with the
    process's output) if it exits or ``timeout`` runs out first."""
    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{process.args!r} did not start:\n{output.read_text()[-4000:]}"
                    ) from None
                time.sleep(0.05)


def stop_by_pid(process: subprocess.Popen[bytes], first: signal.Signals) -> None:
    """``first`` (SIGTERM, or SIGINT for servers that flush on Ctrl-C) to this process
    id, then SIGKILL if it has not exited within 30 s."""
    if process.poll() is not None:
        return
    os.kill(process.pid, first)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()


def parse(text: str) -> list[ReceivedSpan]:
    """rotel's detailed debug output → spans (with their resource and scope)."""
    spans: list[ReceivedSpan] = []
    resource: dict[str, Any] = {}
    scope = ""
    section = ""
    current: ReceivedSpan | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if line.startswith("ResourceSpans #"):
            resource, current, section = {}, None, ""
        elif line.startswith("Resource attributes:"):
            section = "resource"
        elif line.startswith("InstrumentationScope"):
            scope, section = stripped.removeprefix("InstrumentationScope").strip(), ""
        elif line.startswith("Span #"):
            current = ReceivedSpan("", "", "", "", "", resource=resource, scope=scope)
            spans.append(current)
            section = "span"
        elif line.startswith("Attributes:"):
            section = "attributes"
        elif line.startswith(("Events:", "Links:", "ScopeSpans")):
            section = "other"
        elif stripped.startswith("-> "):
            key, _, raw = stripped[3:].partition(": ")
            if section == "resource":
                resource[key] = value(raw)
            elif section == "attributes" and current is not None:
                current.attributes[key] = value(raw)
        elif current is not None and section == "span" and ":" in stripped:
            key, _, raw = stripped.partition(":")
            field_name = {
                "Trace ID": "trace_id",
                "Parent ID": "parent_id",
                "ID": "span_id",
                "Name": "name",
                "Kind": "kind",
            }.get(key.strip())
            if field_name is not None:
                setattr(current, field_name, raw.strip())
    return spans


def value(raw: str) -> Any:
    """``Str(x)`` → "x", ``Int(3)`` → 3, ``Bool(true)`` → True, ``Slice(Str(a), ...)`` →
    a tuple, as the debug exporter prints OTLP values."""
    if raw.startswith("Slice(") and raw.endswith(")"):
        return tuple(value(f"{kind}({inner})") for kind, inner in _VALUE.findall(raw[6:-1]))
    kind, _, inner = raw.partition("(")
    inner = inner[:-1] if inner.endswith(")") else inner
    if kind == "Int":
        return int(inner)
    if kind == "Double":
        return float(inner)
    if kind == "Bool":
        return inner == "true"
    return inner
