"""The log's batch insert writes every event once, as it was published, in as many statements
as the database's parameter limit needs."""

import pytest

from streams.log import writes
from streams.log.writes import event_log_write_batch
from streams.models import Event
from tests.factories import TenantFactory, envelope_make

pytestmark = pytest.mark.django_db


def test_the_insert_names_every_column_of_the_log_but_its_id():
    columns = {f.name for f in Event._meta.concrete_fields if not f.primary_key}

    assert set(writes._EVENT_FIELDS) == columns
    assert len(writes._EVENT_FIELDS) == len(columns)


def test_events_are_logged_with_their_data_as_published_and_json_null_as_sql_null():
    tenant = TenantFactory()
    published = envelope_make(1, tenant.id, data_json='{"b":1,"a":[true,"é"]}')
    nothing = envelope_make(2, tenant.id, data_json="null")

    assert event_log_write_batch(envelopes=[published, nothing]) == 2

    first, second = Event.objects.filter(tenant=tenant).order_by("seq")
    assert (first.event_id, first.topic, first.type) == (published.id, "t", "message")
    assert first.data == {"b": 1, "a": [True, "é"]}
    assert first.received_at == published.received_at
    assert first.persisted_at >= published.received_at
    assert second.data is None
    assert Event.objects.filter(tenant=tenant, data__isnull=True).count() == 1


def test_a_batch_larger_than_one_statement_takes_is_logged_whole_and_a_retry_adds_nothing():
    tenant = TenantFactory()
    batch = [envelope_make(seq, tenant.id, data_json=str(seq)) for seq in range(1, 1202)]

    event_log_write_batch(envelopes=batch)
    event_log_write_batch(envelopes=batch[500:700])  # a retried part of it

    seqs = list(Event.objects.filter(tenant=tenant).values_list("seq", flat=True))
    assert seqs == list(range(1, 1202))
    assert Event.objects.get(tenant=tenant, seq=1201).data == 1201
