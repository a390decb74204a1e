"""Provides what the webhooks tests share: a real receiver on loopback, which the tests may send
to (EVENTHUB_WEBHOOK_ALLOW_PRIVATE), and a short retry schedule."""

from collections.abc import Iterator

import pytest

from tests.webhooks.receiver import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def allow_private(settings):
    settings.EVENTHUB_WEBHOOK_ALLOW_PRIVATE = True
    settings.EVENTHUB_WEBHOOK_TIMEOUT = 1.0
    settings.EVENTHUB_WEBHOOK_RETRY_SCHEDULE = [0.1, 0.2, 0.3]
    return settings
