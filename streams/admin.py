"""Provides the read-only admin of the event log, kept fast on millions of rows."""

from django.contrib import admin
from django.core.paginator import Paginator
from django.utils.functional import cached_property

from streams.models import Event


class NoCountPaginator(Paginator):
    """Skips COUNT(*) over the whole log: the admin shows 'more' instead of a page total."""

    @cached_property
    def count(self) -> int:
        return 10**9


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ["event_id", "tenant", "seq", "topic", "type", "received_at", "persisted_at"]
    list_filter = ["tenant", ("received_at", admin.DateFieldListFilter)]
    search_fields = ["=event_id", "^topic"]
    list_select_related = ["tenant"]
    ordering = ["-received_at"]
    paginator = NoCountPaginator
    show_full_result_count = False
    list_per_page = 50
    readonly_fields = [f.name for f in Event._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
