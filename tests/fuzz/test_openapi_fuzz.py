"""schemathesis over the live server's own /openapi.json: every operation, from examples, coverage, fuzzing and
stateful phases (valid and invalid inputs, linked calls such as submit -> status -> cancel), against the real API,
store, storage and worker (the engine is faked for speed). Whatever a client sends, the server answers without a
server error and with a status, content type and body its schema documents.

One check is left out: positive_data_acceptance ("a schema-valid request gets a 2xx"). Some schema-valid requests
are refused on purpose by what a schema cannot express: the URL policy (a webhook to 0.0.0.0 is a 422 naming
fal_webhook), or the request's state (cancelling a completed request is fal's 400 ALREADY_COMPLETED).

schemathesis runs as its own command (its pytest plugin does not load under this pytest); the test reads its
JUnit report back so the figures (operations, cases) are printed with the result."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import LiveServer, make_settings, start_live_server
from tests.support.fakes import FakeEngine

EXAMPLES_PER_OPERATION = 20


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory):
    settings = make_settings(tmp_path_factory.mktemp("fuzz"), tls_port=None, redux_enabled=True)
    server = start_live_server(settings, FakeEngine())
    yield server
    server.stop()


# fal's protocol answers a sync request that could not start within X-Fal-Request-Timeout with a 504 (its "user"
# timeout); every other 5xx is a server error.
CONFIG = """
[checks.not_a_server_error]
expected-statuses = ["2xx", "3xx", "4xx", "504"]
"""


def test_every_operation_answers_within_its_schema(live: LiveServer, tmp_path: Path):
    junit = tmp_path / "junit.xml"
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    schemathesis = Path(sys.executable).with_name("schemathesis")
    out = subprocess.run(
        [str(schemathesis), "--config-file", str(config), "run", f"{live.url}/openapi.json", "--checks", "all", "--exclude-checks", "positive_data_acceptance", "--max-examples",
         str(EXAMPLES_PER_OPERATION), "--generation-deterministic", "--continue-on-failure",
         "--request-timeout", "30", "--report", "junit", "--report-junit-path", str(junit)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,  # its example cache stays out of the checkout
    )  # fmt: skip
    summary = out.stdout[out.stdout.rfind("SUMMARY"):]
    print(summary)
    suites = ET.parse(junit).getroot()
    operations = len(suites.findall(".//testcase"))
    assert operations >= 15, f"every operation fuzzed ({operations})"
    assert out.returncode == 0, out.stdout[-8000:]
