"""Provides the real hub for the Python client's tests, started as the e2e tests start it
(tests/e2e/conftest.py), and a hub that restarts on its own port, as a service restarted by
its operator does, so that a client keeps its URL across the restart."""

import shutil

import pytest

from tests.e2e.conftest import HubServer, api, hub, make_hub, migrated_database
from tests.processes import Process

__all__ = ["api", "hub", "make_hub", "migrated_database"]


class SamePortHub(HubServer):
    """A hub whose restarts keep the database and the port."""

    def start(self, within: float = 20.0) -> "SamePortHub":
        port = self.port
        if port is None:
            return super().start(within)  # type: ignore[return-value]
        assert self.process is None or not self.process.running, "already running"
        process = Process("web", self.env, self.workdir)
        process.argv = [str(port) if arg == str(process.port) else arg for arg in process.argv]
        process.port = port
        process.env["PORT"] = str(port)
        self.process = process
        self._logs.append(process.log_path)
        process.start(ready_within=within)
        return self


@pytest.fixture
def restartable_hub(tmp_path, migrated_database):
    """A hub of the test's own over a copy of the migrated database, always stopped."""
    shutil.copy(migrated_database, tmp_path / "db.sqlite3")
    server = SamePortHub(tmp_path)
    server.start()
    yield server
    server.stop()
