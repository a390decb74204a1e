""".env.example, the operator's list of settings, names every environment variable the product
reads."""

import re

from tests.processes import ROOT

PRODUCT = ("eventhub", "streams", "tenants", "webhooks", "dashboard")
# env("X"), env.int("X", ...), os.environ.get("X"), os.environ["X"], os.getenv("X"); the name
# may be on the next line.
READS = re.compile(
    r'(?:\benv(?:\.\w+)?\(|os\.environ(?:\.get)?[(\[]|getenv\()\s*"([A-Z][A-Z0-9_]+)"'
)


def test_every_environment_variable_the_code_reads_is_in_env_example():
    read = {
        name
        for package in PRODUCT
        for path in (ROOT / package).rglob("*.py")
        for name in READS.findall(path.read_text())
    }
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))

    assert "EVENTHUB_HEARTBEAT_INTERVAL" in read  # the pattern finds what it should
    assert read - listed == set()
