"""Webhook sink: every advance notice POSTed, HMAC-signed, to a URL the grid operator gives."""

from gateway.sinks.webhook.sink import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookSink, sign

__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "WebhookSink", "sign"]
