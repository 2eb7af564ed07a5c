"""examples/quickstart/predict.py sends its prediction to the gateway that declare.yaml
configures (host and port), not to a port it assumes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
PREDICT = REPO / "examples" / "quickstart" / "predict.py"


class FakeGateway:
    """Answers every POST like the gateway does for iris, and records the paths asked."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                fake.paths.append(self.path)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.dumps({"predictions": [0, 2]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("served-model-name", "iris-1")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def gateway() -> Iterator[FakeGateway]:
    fake = FakeGateway()
    yield fake
    fake.close()


def test_predict_uses_the_port_of_declare_yaml(gateway: FakeGateway, tmp_path: Path) -> None:
    shutil.copy(PREDICT, tmp_path / "predict.py")
    (tmp_path / "declare.yaml").write_text(f"gateway:\n  host: 127.0.0.1\n  port: {gateway.port}\n")
    result = subprocess.run(
        [sys.executable, str(tmp_path / "predict.py")],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert gateway.paths == ["/serving-endpoints/iris/invocations"]
    assert f"127.0.0.1:{gateway.port}/serving-endpoints/iris/invocations -> 200" in result.stdout
    assert '{"predictions": [0, 2]}' in result.stdout
