"""The providers' own error bodies and headers, status by status (what a real 4xx/5xx/429 looks like)."""

from __future__ import annotations

from ops.devkit.sink.base import Response


def resend_error(status: int, name: str, message: str) -> Response:
    return Response(status, {"statusCode": status, "name": name, "message": message})


def resend_default(status: int) -> Response:
    if status == 429:
        resp = resend_error(
            429,
            "rate_limit_exceeded",
            "Too many requests. You can only make 2 requests per second. See rate limit response headers "
            "for more information. Or contact support to increase rate limit.",
        )
        resp.headers.update(
            {"Retry-After": "1", "ratelimit-limit": "2", "ratelimit-remaining": "0", "ratelimit-reset": "1"}
        )
        return resp
    if status in (502, 503, 504):  # what a CDN in front of an API sends: HTML
        return Response(
            status, f"<html><head><title>{status}</title></head><body>upstream error</body></html>"
        )
    named = {
        400: ("validation_error", "We found an error with one or more fields in the request."),
        401: ("missing_api_key", "Missing API key in the authorization header."),
        403: ("invalid_api_key", "API key is invalid."),
        404: ("not_found", "The requested endpoint does not exist."),
        405: ("method_not_allowed", "Method not allowed."),
        409: ("invalid_idempotent_request", "Same idempotency key used with a different request payload."),
        422: ("validation_error", "We found an error with one or more fields in the request."),
        500: ("application_error", "An unexpected error occurred."),
    }
    name, message = named.get(
        status, ("application_error" if status >= 500 else "validation_error", f"HTTP {status}")
    )
    return resend_error(status, name, message)


def slack_webhook_default(status: int) -> Response:
    codes = {
        400: "invalid_payload",
        403: "invalid_token",
        404: "no_service",
        410: "channel_is_archived",
        429: "rate_limited",
    }
    resp = Response(status, codes.get(status, "internal_error" if status >= 500 else "invalid_payload"))
    if status == 429:
        resp.headers["Retry-After"] = "1"
    return resp


def slack_api_default(status: int) -> Response:
    if status == 429:
        return Response(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "1"})
    if status >= 500:
        return Response(status, {"ok": False, "error": "internal_error"})
    return Response(status, {"ok": False, "error": "invalid_request"})


def default_error(route: str, status: int) -> Response:
    if route == "pagerduty.enqueue":
        from ops.devkit.sink.paging import pagerduty_error

        return pagerduty_error(status)
    if route == "webhook":
        return Response(status, "internal error" if status >= 500 else f"HTTP {status}")
    if route.startswith("resend."):
        return resend_default(status)
    if route == "slack.webhook":
        return slack_webhook_default(status)
    return slack_api_default(status)
