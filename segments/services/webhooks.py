"""Enter / exit webhooks: HMAC-signed POSTs with retries, a delivery log, and an address guard.

The guard resolves the URL's host and checks EVERY address it resolves to: loopback, private,
link-local, shared (CGNAT), multicast, reserved and unspecified addresses are refused unless an
operator allows a network explicitly (CDP_WEBHOOK_ALLOWED_NETWORKS). The connection is then
made to the address that was checked (pinned), with the host name kept for the Host header and
for TLS certificate verification, so a second DNS answer cannot redirect it (DNS rebinding).
Redirects are not followed.

Consent: people without a purpose the segment requires are left out when a delivery is queued,
taken out of queued deliveries when they withdraw (segments.services.consent), and checked again
just before sending; a delivery left with nobody is cancelled (shown in the delivery log).

Signature: header `X-CDP-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`
with the segment's webhook secret (shown on the segment page to those who may change it).
"""

import hashlib
import hmac
import http.client
import ipaddress
import logging
import socket
import ssl
import time
from datetime import timedelta
from urllib.parse import urlsplit

import orjson
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from segments.models import WebhookDelivery
from segments.purposes import profiles_with_purposes

logger = logging.getLogger(__name__)

TIMEOUT_SECONDS = 10
MAX_ATTEMPTS = 6
# Waits after the 1st, 2nd, ... failed attempt.
BACKOFF = [timedelta(seconds=30), timedelta(minutes=2), timedelta(minutes=10), timedelta(hours=1),
           timedelta(hours=6)]
LEASE = timedelta(minutes=2)
MAX_RESPONSE_BYTES = 65_536
CANCELLED_REASON = "cancelled: everyone in it withdrew a purpose the segment requires"


class WebhookRefused(ValueError):
    """The URL is not acceptable (scheme, host, or an address in a refused range)."""


def _allowed_networks() -> list:
    return [ipaddress.ip_network(item, strict=False) for item in settings.CDP_WEBHOOK_ALLOWED_NETWORKS]


def address_refusal(address: str) -> str | None:
    """Why an IP address may not be called, or None when it may."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in network for network in _allowed_networks()):
        return None
    for label, flag in (("loopback", ip.is_loopback), ("link-local", ip.is_link_local),
                        ("unspecified", ip.is_unspecified), ("multicast", ip.is_multicast),
                        ("reserved", ip.is_reserved), ("private", ip.is_private)):
        if flag:
            return label
    if not ip.is_global:
        return "not public"
    return None


def webhook_url_check(url: str) -> list[tuple[str, str, int]]:
    """Resolve the URL and check every address; returns [(host, address, port)] or raises."""
    if len(url) > 500:
        raise WebhookRefused("The webhook URL is longer than 500 characters.")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http"):
        raise WebhookRefused("The webhook URL must start with https:// (or http://).")
    if not parts.hostname:
        raise WebhookRefused("The webhook URL has no host.")
    if parts.username or parts.password:
        raise WebhookRefused("The webhook URL must not contain a user name or password.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise WebhookRefused("The webhook URL has an invalid port.") from None
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise WebhookRefused(f"The host {parts.hostname!r} does not resolve.") from None
    addresses = sorted({info[4][0] for info in infos})
    if not addresses:
        raise WebhookRefused(f"The host {parts.hostname!r} does not resolve.")
    for address in addresses:
        reason = address_refusal(address)
        if reason:
            raise WebhookRefused(f"The host {parts.hostname!r} resolves to a {reason} address ({address}); "
                                 "webhooks may only call public addresses.")
    return [(parts.hostname, address, port) for address in addresses]


def webhook_sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a fixed IP address, verifying the certificate for the original host name."""

    def __init__(self, host: str, address: str, port: int, context: ssl.SSLContext, timeout: float):
        super().__init__(host, port, timeout=timeout, context=context)
        self._address = address
        self._ssl_context = context

    def connect(self):
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._ssl_context.wrap_socket(sock, server_hostname=self.host)


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, address: str, port: int, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self):
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


def _post(url: str, body: bytes, headers: dict) -> int:
    """POST to a checked, pinned address (the next one if an address cannot be reached)."""
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    last_error: OSError | None = None
    for host, address, port in webhook_url_check(url):
        if parts.scheme == "https":
            connection = _PinnedHTTPSConnection(host, address, port, ssl.create_default_context(), TIMEOUT_SECONDS)
        else:
            connection = _PinnedHTTPConnection(host, address, port, TIMEOUT_SECONDS)
        try:
            connection.connect()
        except OSError as exc:  # unreachable address family or host: try the next checked address
            last_error = exc
            connection.close()
            continue
        try:
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            response.read(MAX_RESPONSE_BYTES)
            return response.status
        finally:
            connection.close()
    raise last_error or OSError("no address to connect to")


def _claim(delivery_id: int) -> WebhookDelivery | None:
    """Take a due delivery for LEASE (a conditional UPDATE: two workers never send it twice)."""
    now = timezone.now()
    claimed = WebhookDelivery.objects.filter(pk=delivery_id, status=WebhookDelivery.Status.PENDING,
                                             next_attempt_at__lte=now).update(next_attempt_at=now + LEASE)
    if not claimed:
        return None
    return WebhookDelivery.objects.select_related("segment").get(pk=delivery_id)


def webhook_deliver(*, delivery_id: int) -> str | None:
    """Attempt one delivery; on failure schedule the next attempt with backoff, then give up."""
    delivery = _claim(delivery_id)
    if delivery is None:
        return None
    segment = delivery.segment
    payload = _consented_payload(delivery)
    if payload is None:
        return WebhookDelivery.Status.CANCELLED
    body = orjson.dumps(payload)
    timestamp = int(time.time())
    headers = {"Content-Type": "application/json", "User-Agent": "CDP-Webhooks/1",
               "X-CDP-Event": f"segment.{delivery.event}", "X-CDP-Delivery": str(delivery.pk),
               "X-CDP-Signature": webhook_sign(segment.webhook_secret, timestamp, body)}
    attempts = delivery.attempts + 1
    status_code, error = None, ""
    try:
        if not segment.webhook_url:
            raise WebhookRefused("The segment no longer has a webhook URL.")
        status_code = _post(segment.webhook_url, body, headers)
    except WebhookRefused as exc:
        _finish(delivery, WebhookDelivery.Status.REFUSED, attempts, None, str(exc))
        logger.warning("webhook refused", extra={"delivery_id": delivery.pk, "segment_id": segment.pk})
        return WebhookDelivery.Status.REFUSED
    except (OSError, http.client.HTTPException) as exc:
        error = f"{type(exc).__name__}: could not connect or no valid response"
    if status_code is not None and 200 <= status_code < 300:
        _finish(delivery, WebhookDelivery.Status.DELIVERED, attempts, status_code, "")
        return WebhookDelivery.Status.DELIVERED
    if status_code is not None:
        error = f"HTTP {status_code}"
    if attempts >= MAX_ATTEMPTS:
        _finish(delivery, WebhookDelivery.Status.FAILED, attempts, status_code, error)
        logger.warning("webhook gave up", extra={"delivery_id": delivery.pk, "attempts": attempts})
        return WebhookDelivery.Status.FAILED
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        attempts=attempts, last_status_code=status_code, last_error=error[:300],
        next_attempt_at=timezone.now() + BACKOFF[min(attempts, len(BACKOFF)) - 1])
    logger.info("webhook attempt failed", extra={"delivery_id": delivery.pk, "attempts": attempts,
                                                 "status_code": status_code})
    return WebhookDelivery.Status.PENDING


def _consented_payload(delivery: WebhookDelivery) -> dict | None:
    """The payload without people who no longer grant a purpose the segment requires, read now
    (stored, so the log shows what is sent); None when nobody is left and the delivery is
    cancelled."""
    purposes = delivery.segment.required_purposes
    profiles = delivery.payload.get("profiles", [])
    if not purposes:
        return delivery.payload
    allowed = {str(p) for p in profiles_with_purposes(profile_ids=[item["profile_id"] for item in profiles],
                                                       purposes=purposes)}
    kept = [item for item in profiles if item["profile_id"] in allowed]
    if len(kept) == len(profiles):
        return delivery.payload
    payload = {**delivery.payload, "profiles": kept}
    changes = {"payload": payload, "profile_count": len(kept),
               "withheld_count": F("withheld_count") + len(profiles) - len(kept)}
    if not kept:
        changes.update(status=WebhookDelivery.Status.CANCELLED, next_attempt_at=None, last_error=CANCELLED_REASON)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(**changes)
    if not kept:
        logger.info("webhook cancelled", extra={"delivery_id": delivery.pk, "segment_id": delivery.segment_id})
        return None
    return payload


def _finish(delivery: WebhookDelivery, status: str, attempts: int, status_code: int | None, error: str) -> None:
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        status=status, attempts=attempts, last_status_code=status_code, last_error=error[:300], next_attempt_at=None,
        delivered_at=timezone.now() if status == WebhookDelivery.Status.DELIVERED else None)


def webhooks_due(*, limit: int = 100) -> list[int]:
    """Ids of pending deliveries whose next attempt is due (index: webhook_due_idx)."""
    return list(WebhookDelivery.objects.filter(status=WebhookDelivery.Status.PENDING,
                                               next_attempt_at__lte=timezone.now())
                .order_by("next_attempt_at").values_list("id", flat=True)[:limit])


@transaction.atomic
def webhook_retry(*, delivery: WebhookDelivery) -> None:
    """Send a failed or refused delivery again (from the delivery log)."""
    WebhookDelivery.objects.filter(pk=delivery.pk).exclude(
        status__in=(WebhookDelivery.Status.DELIVERED, WebhookDelivery.Status.CANCELLED)).update(
        status=WebhookDelivery.Status.PENDING, next_attempt_at=timezone.now(), attempts=0)
    from segments.tasks import webhook_deliver_task

    transaction.on_commit(lambda: webhook_deliver_task.delay(delivery_id=delivery.pk))
