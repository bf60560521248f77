"""Enter / exit webhooks: the address guard, signatures, retries with backoff, the delivery log."""

import hashlib
import hmac
import http.server
import socket
import threading
from datetime import timedelta

import orjson
import pytest
from django.utils import timezone

from segments.models import SegmentRun, WebhookDelivery
from segments.services import webhooks
from segments.services.definitions import segment_create
from segments.services.realtime import realtime_evaluate
from segments.services.recompute import segment_recompute
from tests.segment_helpers import World, definition

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("address, reason", [
    ("127.0.0.1", "loopback"), ("10.0.0.1", "private"), ("172.16.5.4", "private"), ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"), ("::1", "loopback"), ("fe80::1", "link-local"), ("::ffff:127.0.0.1", "loopback"),
    ("100.64.0.1", "not public"), ("0.0.0.0", "unspecified"), ("224.0.0.1", "multicast"), ("fc00::1", "private"),
    ("93.184.216.34", None), ("2606:2800:220:1:248:1893:25c8:1946", None),
])
def test_address_guard(address, reason):
    assert webhooks.address_refusal(address) == reason


def test_every_resolved_address_is_checked(monkeypatch):
    def resolver(host, port, type=0):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    with pytest.raises(webhooks.WebhookRefused, match=r"resolves to a private address \(10\.0\.0\.7\)"):
        webhooks.webhook_url_check("https://hooks.example.com/x")


def test_localhost_and_unresolvable_hosts_are_refused():
    with pytest.raises(webhooks.WebhookRefused, match="loopback"):
        webhooks.webhook_url_check("http://localhost/hook")
    with pytest.raises(webhooks.WebhookRefused, match="does not resolve"):
        webhooks.webhook_url_check("https://no-such-host.invalid/hook")


class Receiver:
    """A real HTTP server on 127.0.0.1 that records what it receives and answers `status`."""

    def __init__(self, address: str = "127.0.0.1"):
        self.requests = []
        self.status = 200
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((address, 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(settings):
    settings.CDP_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8", "::1/128"]  # an operator's explicit allowance
    server = Receiver()
    yield server
    server.close()


def hooked_segment(users, port, host="127.0.0.1"):
    segment = segment_create(actor=users["alice"], key="viewers", name="Viewers",
                             webhook_url=f"http://{host}:{port}/cdp?tenant=7",
                             definition=definition({"type": "event", "event": "product_viewed",
                                                    "window": {"last": 1, "unit": "days"},
                                                    "count": {"operator": ">=", "value": 1}}))
    segment_recompute(run_id=SegmentRun.objects.get(segment=segment).pk)
    segment.refresh_from_db()
    return segment


def test_entries_are_delivered_signed_to_the_checked_address(users, receiver):
    w = World(now=timezone.now())
    anna = w.profile()
    segment = hooked_segment(users, receiver.port, host="localhost")
    w.event(anna, "product_viewed", timedelta(seconds=5))
    realtime_evaluate(profile_ids=[anna], event_names=["product_viewed"])
    delivery = WebhookDelivery.objects.get()
    assert (delivery.event, delivery.profile_count, delivery.status) == ("entered", 1, "pending")
    assert webhooks.webhook_deliver(delivery_id=delivery.pk) == "delivered"
    [request] = receiver.requests
    assert request["path"] == "/cdp?tenant=7"
    assert request["headers"]["Host"] == f"localhost:{receiver.port}"
    assert request["headers"]["X-CDP-Event"] == "segment.entered"
    payload = orjson.loads(request["body"])
    assert payload["segment"] == "viewers" and payload["event"] == "entered" and payload["definition_version"] == 1
    assert [item["profile_id"] for item in payload["profiles"]] == [str(anna)]
    stamp, signature = request["headers"]["X-CDP-Signature"].split(",")
    expected = hmac.new(segment.webhook_secret.encode(), stamp[2:].encode() + b"." + request["body"],
                        hashlib.sha256).hexdigest()
    assert signature == f"v1={expected}"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 1, 200)
    assert webhooks.webhook_deliver(delivery_id=delivery.pk) is None  # never twice


def test_failures_are_retried_with_backoff_then_given_up(users, receiver):
    w = World(now=timezone.now())
    anna = w.profile()
    hooked_segment(users, receiver.port)
    w.event(anna, "product_viewed", timedelta(seconds=5))
    realtime_evaluate(profile_ids=[anna], event_names=["product_viewed"])
    delivery = WebhookDelivery.objects.get()
    receiver.status = 500
    before = timezone.now()
    assert webhooks.webhook_deliver(delivery_id=delivery.pk) == "pending"
    delivery.refresh_from_db()
    assert (delivery.attempts, delivery.last_status_code, delivery.last_error) == (1, 500, "HTTP 500")
    assert before + timedelta(seconds=29) < delivery.next_attempt_at < timezone.now() + timedelta(seconds=31)
    assert webhooks.webhooks_due() == []  # not due before its backoff
    WebhookDelivery.objects.filter(pk=delivery.pk).update(attempts=webhooks.MAX_ATTEMPTS - 1,
                                                          next_attempt_at=timezone.now())
    assert webhooks.webhooks_due() == [delivery.pk]
    assert webhooks.webhook_deliver(delivery_id=delivery.pk) == "failed"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("failed", webhooks.MAX_ATTEMPTS, None)
    assert len(receiver.requests) == 2
    receiver.status = 204
    webhooks.webhook_retry(delivery=delivery)
    assert webhooks.webhook_deliver(delivery_id=delivery.pk) == "delivered"


def test_an_address_that_changes_to_a_private_one_after_saving_is_refused(users, receiver, settings, monkeypatch):
    w = World(now=timezone.now())
    anna = w.profile()
    hooked_segment(users, receiver.port)
    w.event(anna, "product_viewed", timedelta(seconds=5))
    realtime_evaluate(profile_ids=[anna], event_names=["product_viewed"])
    settings.CDP_WEBHOOK_ALLOWED_NETWORKS = []  # the allowance is withdrawn (or DNS now says 127.0.0.1)
    delivery = WebhookDelivery.objects.get()
    assert webhooks.webhook_deliver(delivery_id=delivery.pk) == "refused"
    delivery.refresh_from_db()
    assert delivery.status == "refused" and "loopback" in delivery.last_error
    assert receiver.requests == []


def test_exits_are_delivered_in_batches_of_at_most_500(users, receiver):
    from segments.services.membership import WEBHOOK_BATCH

    w = World(now=timezone.now())
    people = [w.profile() for _ in range(WEBHOOK_BATCH + 3)]
    for person in people:
        w.event(person, "product_viewed", timedelta(hours=23, minutes=59, seconds=58))
    segment = hooked_segment(users, receiver.port)
    batches = sorted(WebhookDelivery.objects.values_list("event", "profile_count"))
    assert batches == [("entered", 3), ("entered", WEBHOOK_BATCH)]
    assert segment.member_count == WEBHOOK_BATCH + 3


def test_an_unreachable_address_falls_back_to_the_next_checked_one(users, settings, monkeypatch):
    settings.CDP_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    server = Receiver("127.0.0.3")  # nothing listens on 127.0.0.1 at this port
    try:
        real = socket.getaddrinfo

        def resolver(host, port, *args, **kwargs):
            if host == "hooks.example.test":
                return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.3", port)),
                        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
            return real(host, port, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", resolver)
        status = webhooks._post(f"http://hooks.example.test:{server.port}/x", b"{}", {"Content-Type": "application/json"})
        assert status == 200
        assert server.requests[0]["headers"]["Host"] == f"hooks.example.test:{server.port}"
    finally:
        server.close()
