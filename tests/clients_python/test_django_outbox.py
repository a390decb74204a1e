"""The Django outbox inside a small Django project of its own (tests/clients_python/
django_project), run in subprocesses as that project would run, against the real hub: a
rolled-back transaction publishes nothing, a committed one publishes once, also when the
process dies between the commit and the send or a relay dies between the send and marking the
row sent."""

import json
import os
import secrets
import signal
import subprocess
import sys
import time

import pytest
from eventhub_client import Client

from tests.processes import ROOT
from tests.scaleout.conftest import pg_database, pg_template

# The scale-out fixtures of a PostgreSQL database (a copy of a migrated template), used here.
__all__ = ["pg_database", "pg_template"]

pytestmark = pytest.mark.e2e

SETTINGS = "tests.clients_python.django_project.settings"


class Project:
    """The test project over a database of its own, publishing to a tenant of the hub."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def run(self, step: str, topic: str, *, expect_exit: int = 0, **env: str) -> list[dict]:
        done = subprocess.run(
            [sys.executable, "-m", "tests.clients_python.django_project.scenario", step, topic],
            cwd=ROOT,
            env=dict(self.env, **env),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == expect_exit, f"{step} ended {done.returncode}:\n{done.stderr}"
        return json.loads(done.stdout.strip().splitlines()[-1]) if expect_exit == 0 else []

    def relay(self, batch: int = 100) -> subprocess.Popen:
        """`manage.py eventhub_outbox_relay` as a long-running process."""
        command = ["eventhub_outbox_relay", "--interval", "0.1", "--batch", str(batch)]
        return subprocess.Popen(
            [sys.executable, "-m", "django", *command],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )


def project_env(hub, key: str, database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVENTHUB_", "DJANGO_"))}
    env.update(
        DJANGO_SETTINGS_MODULE=SETTINGS,
        OUTBOX_DATABASE_URL=database_url,
        EVENTHUB_URL=hub.url,
        EVENTHUB_KEY=key,
        EVENTHUB_OUTBOX_LEASE="0.5",
        PYTHONPATH=str(ROOT),
    )
    return env


@pytest.fixture(scope="module")
def tenant(hub):
    return hub.tenant()


@pytest.fixture(scope="module")
def project(hub, tenant, tmp_path_factory):
    database = tmp_path_factory.mktemp("outbox") / "project.sqlite3"
    project = Project(project_env(hub, tenant.key, f"sqlite:///{database}"))
    project.run("migrate", "-")
    return project


@pytest.fixture(scope="module")
def hub_client(hub, tenant):
    with Client(hub.url, key=tenant.key) as client:
        yield client


def logged(client: Client, topic: str, count: int, within: float = 10.0) -> list[dict]:
    """The topic's events in the hub's log once it holds `count` (and a moment more, so that
    a duplicate would show); fails after `within` seconds."""
    deadline = time.monotonic() + within
    while len(events := list(client.history(topic=topic))) < count:
        assert time.monotonic() < deadline, f"{len(events)} of {count} events logged"
        time.sleep(0.05)
    time.sleep(0.2)
    return list(client.history(topic=topic))


def topic() -> str:
    return f"outbox.{secrets.token_hex(4)}"


def test_a_rolled_back_transaction_stores_and_publishes_nothing(project, hub_client):
    name = topic()
    assert project.run("rollback", name) == []
    project.run("commit", name)  # a later event, to know the log is written up to here

    assert [e["data"]["step"] for e in logged(hub_client, name, 1)] == ["commit"]


def test_a_committed_event_is_published_once_after_the_commit(project, hub_client):
    name = topic()
    [row] = project.run("commit", name)

    [event] = logged(hub_client, name, 1)
    assert row["sent"]
    assert row["event_id"] == event["id"]
    assert event["event"] == "created"
    assert project.run("relay", name) == [row], "the relay leaves a sent row alone"


def test_an_event_committed_by_a_process_that_died_before_sending_is_sent_by_the_relay(
    project, hub_client
):
    name = topic()
    project.run("crash_after_commit", name, expect_exit=3)
    [left] = project.run("state", name)
    assert not left["sent"]

    [row] = project.run("relay", name)

    assert row["sent"]
    assert [e["data"]["step"] for e in logged(hub_client, name, 1)] == ["crash_after_commit"]


def test_a_relay_that_died_between_send_and_mark_resends_harmlessly(project, hub_client):
    name = topic()
    project.run("crash_after_send", name, expect_exit=3)

    [row] = project.run("relay", name)

    assert row["sent"]
    assert row["attempts"] == 2
    [event] = logged(hub_client, name, 1)
    assert event["id"] == row["event_id"], "the hub answered the resend with the first answer"


def test_the_long_running_relay_sends_what_is_left_and_stops_on_sigterm(project, hub_client):
    name = topic()
    project.run("pending", name, OUTBOX_ROWS="3")
    relay = project.relay()
    try:
        events = logged(hub_client, name, 3)
    finally:
        [code] = stop([relay])

    assert code == 0
    assert [e["data"]["n"] for e in events] == [0, 1, 2]
    assert all(row["sent"] for row in project.run("state", name))


def stop(relays: list[subprocess.Popen]) -> list[int]:
    for relay in relays:
        relay.send_signal(signal.SIGTERM)
    return [relay.wait(timeout=10) for relay in relays]


def test_two_relays_on_postgresql_send_each_row_once(hub, tenant, hub_client, pg_database):
    project = Project(project_env(hub, tenant.key, pg_database))
    project.run("migrate", "-")
    name = topic()
    project.run("pending", name, OUTBOX_ROWS="40")

    # Small batches, so that both relays claim rows while the other holds some (SKIP LOCKED).
    relays = [project.relay(batch=4), project.relay(batch=4)]
    try:
        events = logged(hub_client, name, 40, within=20)
    finally:
        codes = stop(relays)

    assert codes == [0, 0]
    assert sorted(e["data"]["n"] for e in events) == list(range(40))
    rows = project.run("state", name)
    assert all(row["sent"] for row in rows)
    assert [row["attempts"] for row in rows] == [1] * 40, "no row was sent by both relays"
