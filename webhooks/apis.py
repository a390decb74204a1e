"""Provides the webhooks' REST API: register, list and delete endpoints, list deliveries."""

from urllib.parse import urlsplit

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from streams.topics import MAX_PATTERNS, pattern_valid
from tenants.actors import Actor
from webhooks import selectors, services
from webhooks.addresses import AddressRefused, url_address
from webhooks.models import KINDS, WebhookEndpoint

ERRORS = {
    401: OpenApiResponse(description="Missing, unknown, revoked or expired key."),
    403: OpenApiResponse(description="The key lacks the `webhooks` scope."),
}


class EndpointOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookEndpoint
        fields = ["id", "url", "topics", "kinds", "active", "disabled_reason"]


def _endpoint(request, endpoint_id: int) -> WebhookEndpoint:
    endpoint = selectors.webhook_endpoint_get(
        tenant_id=request.auth.tenant_id, endpoint_id=endpoint_id
    )
    if endpoint is None:
        raise NotFound("No webhook endpoint of this tenant has this id.")
    return endpoint


class WebhooksApi(APIView):
    """`/api/v1/webhooks`: registers an endpoint (POST) or lists the tenant's (GET)."""

    required_scope = "webhooks"

    class InputSerializer(serializers.Serializer):
        url = serializers.URLField(max_length=2000)
        topics = serializers.ListField(
            child=serializers.CharField(max_length=201),
            min_length=1,
            max_length=MAX_PATTERNS,
            default=lambda: ["*"],
        )
        kinds = serializers.ListField(
            child=serializers.ChoiceField(choices=KINDS),
            min_length=1,
            default=lambda: ["event"],
        )

        def validate_url(self, url: str) -> str:
            if urlsplit(url).scheme not in ("http", "https"):
                raise serializers.ValidationError("Only http and https URLs are sent to.")
            try:
                url_address(url)
            except AddressRefused as exc:
                raise serializers.ValidationError(str(exc)) from exc
            return url

        def validate_topics(self, topics: list[str]) -> list[str]:
            bad = [p for p in topics if not pattern_valid(p)]
            if bad:
                raise serializers.ValidationError(f"Not a topic pattern: {bad[0]!r}.")
            return list(dict.fromkeys(topics))

        def validate_kinds(self, kinds: list[str]) -> list[str]:
            return list(dict.fromkeys(kinds))

    class CreatedSerializer(EndpointOutputSerializer):
        secret = serializers.CharField(help_text="`whsec_…`: shown once.")

        class Meta(EndpointOutputSerializer.Meta):
            fields = [*EndpointOutputSerializer.Meta.fields, "secret"]

    @extend_schema(
        operation_id="webhook_create",
        request=InputSerializer,
        responses={
            201: CreatedSerializer,
            400: OpenApiResponse(description="Bad URL (or a non-public host), topics or kinds."),
            **ERRORS,
        },
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        created = services.webhook_endpoint_create(
            tenant_id=request.auth.tenant_id,
            actor=Actor.from_request(request),
            **serializer.validated_data,
        )
        body = EndpointOutputSerializer(created.endpoint).data
        return Response({**body, "secret": created.secret}, status=status.HTTP_201_CREATED)

    @extend_schema(
        operation_id="webhook_list",
        responses={
            200: inline_serializer("WebhookList", {"results": EndpointOutputSerializer(many=True)}),
            **ERRORS,
        },
    )
    def get(self, request):
        endpoints = selectors.webhook_endpoints(tenant_id=request.auth.tenant_id)
        return Response({"results": EndpointOutputSerializer(endpoints, many=True).data})


class WebhookDeleteApi(APIView):
    """`/api/v1/webhooks/{id}`: deletes an endpoint; nothing more is sent to it."""

    required_scope = "webhooks"

    @extend_schema(
        operation_id="webhook_delete",
        request=None,
        responses={
            204: OpenApiResponse(description="Deleted, with its deliveries."),
            404: OpenApiResponse(description="No endpoint of this tenant has this id."),
            **ERRORS,
        },
    )
    def delete(self, request, endpoint_id: int):
        endpoint = _endpoint(request, endpoint_id)
        services.webhook_endpoint_delete(endpoint=endpoint, actor=Actor.from_request(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookDeliveriesApi(APIView):
    """`/api/v1/webhooks/{id}/deliveries`: the endpoint's latest deliveries, newest first."""

    required_scope = "webhooks"

    class OutputSerializer(serializers.Serializer):
        webhook_id = serializers.CharField()
        type = serializers.CharField()
        status = serializers.CharField()
        attempts = serializers.IntegerField()
        last_status_code = serializers.IntegerField(allow_null=True)
        last_error = serializers.CharField()
        next_attempt_at = serializers.DateTimeField(allow_null=True)
        created_at = serializers.DateTimeField()

    @extend_schema(
        operation_id="webhook_deliveries",
        responses={
            200: inline_serializer("WebhookDeliveries", {"results": OutputSerializer(many=True)}),
            404: OpenApiResponse(description="No endpoint of this tenant has this id."),
            **ERRORS,
        },
    )
    def get(self, request, endpoint_id: int):
        endpoint = _endpoint(request, endpoint_id)
        deliveries = selectors.webhook_deliveries(endpoint=endpoint)
        return Response({"results": self.OutputSerializer(deliveries, many=True).data})
