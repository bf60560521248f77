"""Data-subject requests: erasure proven over the whole PII registry, anonymisation, receipts,
access exports built by a real Celery worker, rectification, the workflow, retention."""

import io
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.apps import apps
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.utils import timezone

from cdp import crypto
from cdp.keyrotation import encrypted_columns
from cdp.pii import registry
from consent.enforcement import suppressed_identifiers
from consent.models import (
    AuditEntry,
    ConsentRecord,
    DataSubjectRequest,
    ErasureReceipt,
    RetentionRule,
    SuppressionEntry,
)
from consent.services import person as persons
from consent.services import requests
from consent.services.audit import audit_record
from consent.services.inputs import ConsentInputError
from consent.services.retention import retention_rule_run
from content.models import ContentBlock, Exposure, Slot
from content.services import decide as decide_content
from profiles.models import (
    ComputedTraits,
    Event,
    Identity,
    IdentityLink,
    ImportJob,
    ImportRowError,
    Profile,
    RejectedEvent,
    Transaction,
    TransactionItem,
)
from segments.models import Membership, MembershipChange, Segment, Timer, WebhookDelivery
from tests.consent_helpers import decide, decide_for_profile, hash_of, make_person, source
from tests.helpers import wait_until

ADA = {"email": "zenobia.quixote@example.com", "phone": "+49 151 2345 6789", "user_id": "u-zq-4711",
       "anonymous_id": "anon-zq-0815"}
ADA_STRINGS = ["zenobia.quixote@example.com", "+4915123456789", "15123456789", "u-zq-4711", "anon-zq-0815",
               "Zenobia", "Quixotic"]


def _with_data(profile, identifiers: dict, tag: str):
    """Events, a purchase, computed traits, identity links and rejected input for a person."""
    shop = source()
    now = datetime.now(UTC)
    for index in range(3):
        Event.objects.create(timestamp=now - timedelta(days=index), received_at=now, source=shop, profile=profile,
                             message_id=f"{tag}-{index}", type="identify" if index == 0 else "track",
                             name="" if index == 0 else "viewed", anonymous_id=identifiers["anonymous_id"],
                             user_id=identifiers["user_id"],
                             traits={"email": identifiers["email"], "first_name": profile.first_name},
                             context={"ip": "203.0.113.1", "traits": {"email": identifiers["email"]},
                                      "location": {"city": "Bath", "country": "GB"}},
                             properties={"email": identifiers["email"], "sku": "A1"})
    order = Transaction.objects.create(source=shop, order_id=f"W-{tag}", profile=profile, amount="12.50",
                                       currency="EUR", timestamp=now)
    TransactionItem.objects.create(transaction=order, product_sku="A1", price="12.50")
    ComputedTraits.objects.create(profile=profile, order_count=1, total_spent="12.50")
    ids = list(Identity.objects.filter(profile=profile).order_by("id").values_list("id", flat=True))
    for low, high in zip(ids, ids[1:], strict=False):
        IdentityLink.objects.create(identity_a_id=low, identity_b_id=high, rule="same_message", first_seen_at=now,
                                    last_seen_at=now)


@pytest.fixture
def media(tmp_path, settings, monkeypatch):
    folder = tmp_path / "media"
    settings.MEDIA_ROOT = folder
    settings.CDP_IMPORT_DIR = folder / "imports"
    monkeypatch.setenv("CDP_MEDIA_DIR", str(folder))  # for the worker process
    return folder


@pytest.fixture
def ada_and_bob(db, users, media):
    ada = make_person(**ADA, first_name="Zenobia", last_name="Quixotic", city="Bath", postcode="BA1 1AA")
    bob = make_person(email="bob@example.com", phone="+44 20 7946 0018", user_id="u-bob", anonymous_id="anon-bob",
                      first_name="Bob", last_name="Jones")
    _with_data(ada, ADA, "ada")
    _with_data(bob, {"email": "bob@example.com", "user_id": "u-bob", "anonymous_id": "anon-bob"}, "bob")
    now = datetime.now(UTC)
    RejectedEvent.objects.create(received_at=now, reason="bad", message="m", payload={
        "batch": [{"traits": {"Email": "Zenobia.Quixote@EXAMPLE.com"}}]})
    RejectedEvent.objects.create(received_at=now, reason="bad", message="m", payload={"phone": "0151 23456789"})
    RejectedEvent.objects.create(received_at=now, reason="bad", message="m", raw_body='{"userId": "u-zq-4711", ')
    RejectedEvent.objects.create(received_at=now, reason="bad", message="m", payload={"email": "bob@example.com"})
    RejectedEvent.objects.create(received_at=now, reason="bad", message="m", raw_body="garbage")
    for who in (ada, bob):
        decide_for_profile(who, {"analytics": True, "personalization": True})
    decide("email", ADA["email"], {"email_marketing": True})
    decide("anonymous_id", ADA["anonymous_id"], {"advertising": False})
    audit_record(actor=users["dan"], action="profile.viewed", object_type="profile", object_id=ada.id)
    audit_record(actor=users["dan"], action="profile.viewed", object_type="profile", object_id=bob.id)
    _segment_data(ada, bob)
    _content_data()
    _import_data(media)
    access = requests.dsr_create(type="access", identifier_kind="email", identifier=ADA["email"],
                                 actor=users["cora"], note="asked by letter, Zenobia Quixotic")
    requests.dsr_assign(request=access, actor=users["cora"])
    requests.dsr_access_export(request_id=access.pk)  # a file on disk holding all her data
    return ada, bob


def _segment_data(ada, bob):
    """Memberships, history, a timer and webhook deliveries: one naming both, one only Ada."""
    now = datetime.now(UTC)
    segment = Segment.objects.create(key="loyal", name="Loyal", webhook_url="https://hooks.example.com/x")
    for person in (ada, bob):
        Membership.objects.create(segment=segment, profile=person, version_from=1, entered_at=now)
        MembershipChange.objects.create(segment=segment, profile=person, kind="entered", at=now,
                                        definition_version=1, membership_version=1, cause="recompute")
        Timer.objects.create(segment=segment, profile=person, due_at=now + timedelta(days=1))
    entry = {"at": now.isoformat()}
    WebhookDelivery.objects.create(segment=segment, event="entered", profile_count=2, payload={
        "segment": "loyal", "event": "entered",
        "profiles": [{"profile_id": str(ada.id), **entry}, {"profile_id": str(bob.id), **entry}]})
    WebhookDelivery.objects.create(segment=segment, event="exited", profile_count=1, payload={
        "segment": "loyal", "event": "exited", "profiles": [{"profile_id": str(ada.id), **entry}]})


def _content_data():
    """Each of them is shown a personalised block once through the decision service (exposures)."""
    slot = Slot.objects.create(key="home_hero", name="Home hero", default_template="<p>Welcome</p>")
    ContentBlock.objects.create(key="spring", name="Spring", slot=slot, template="<p>Spring</p>")
    for kind, value in (("email", ADA["email"]), ("anonymous_id", "anon-bob")):
        decision = decide_content(source_id=None, visitor=(kind, hash_of(kind, value)), slot_keys=["home_hero"])
        assert decision.personalized and decision.slots[0].block == "spring"


def _import_data(media):
    """A retained CRM upload naming Ada and Bob, another naming only Bob, and row errors."""
    folder = media / "imports"
    for name, body in (("both.csv", f"email;name\n{ADA['email']};Zenobia\nbob@example.com;Bob\n"),
                       ("bob.csv", "email;name\nbob@example.com;Bob\n")):
        path = folder / name.removesuffix(".csv") / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body, encoding="utf-8")
        job = ImportJob.objects.create(kind="crm", source=source(), status="succeeded", file_name=name,
                                       file_path=str(path), file_format="csv", encoding="utf-8", delimiter=";")
        ImportRowError.objects.create(job=job, row_number=3, column="email", value="bob@example",
                                      reason="malformed email")
    ImportRowError.objects.create(job=job, row_number=4, column="phone", value="0151 2345 6789",
                                  reason="malformed phone")


def _table_text(model) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT coalesce(string_agg(t::text, E'\\n'), '') FROM {model._meta.db_table} t")  # noqa: S608
        return cursor.fetchone()[0].lower()


def _counts(profile_ids) -> dict:
    return {"events": Event.objects.filter(profile_id__in=profile_ids).count(),
            "identities": Identity.objects.filter(profile_id__in=profile_ids).count(),
            "transactions": Transaction.objects.filter(profile_id__in=profile_ids).count(),
            "items": TransactionItem.objects.filter(transaction__profile_id__in=profile_ids).count()}


def test_erasure_leaves_nothing_of_the_person_in_any_registered_location(ada_and_bob, users, media):
    ada, bob = ada_and_bob
    bob_before = _counts([bob.id])
    records_before = ConsentRecord.objects.count()
    request = requests.dsr_create(type="erasure", identifier_kind="phone", identifier="+49 (151) 2345-6789",
                                  actor=users["cora"])
    outcome = requests.dsr_erase(request=request, actor=users["cora"])

    person_ids = [ada.id]
    locations = registry().locations
    assert {loc.model for loc in locations} >= {"profiles.Profile", "profiles.Event", "profiles.RejectedEvent",
                                                "consent.ConsentRecord", "consent.AuditEntry"}
    for location in locations:
        model = apps.get_model(location.model)
        text = _table_text(model)
        for needle in ADA_STRINGS + [str(ada.id)]:
            assert needle.lower() not in text, f"{location.model} still holds {needle!r}"
        if location.subject:
            field = model._meta.get_field(location.subject.split("__")[0])
            values = [str(p) for p in person_ids] if field.get_internal_type() in ("CharField", "TextField") \
                else person_ids
            assert not model.objects.filter(**{f"{location.subject}__in": values}).exists(), location.model
        if location.hash_columns and location.on_erasure == "delete":
            kind, digest = location.hash_columns
            assert not model.objects.filter(**{kind: "email", digest: hash_of("email", ADA["email"])}).exists()
    # Encrypted columns hold nothing of her either (decrypted and searched).
    for column in encrypted_columns():
        model = apps.get_model(column.model)
        for value in model.objects.values_list(column.field, flat=True):
            if value and value.startswith("e1."):
                value = crypto.decrypt(value)
            assert not any(needle.lower() in (value or "").lower() for needle in ADA_STRINGS), column
    # The ledger is kept (keyed hashes only), the access file is gone, suppression is in place.
    assert ConsentRecord.objects.count() == records_before
    assert not any(default_storage.listdir("dsr")[1])
    assert SuppressionEntry.objects.count() == 5  # 4 identifiers + the profile-id subject
    assert RejectedEvent.objects.count() == 2  # Bob's and the garbage
    assert _counts([bob.id]) == bob_before
    assert Profile.objects.filter(id=bob.id).exists()
    assert AuditEntry.objects.filter(object_id=str(bob.id)).count() == 1
    # The receipt: per table, no personal data.
    receipt = ErasureReceipt.objects.get(pk=outcome.receipt_id)
    assert receipt.counts["profiles.Event"] == {"deleted": 3}
    assert receipt.counts["profiles.Identity"] == {"deleted": 4}
    assert receipt.counts["profiles.IdentityLink"] == {"deleted": 3}
    assert receipt.counts["profiles.Transaction"] == {"deleted": 1}
    assert receipt.counts["profiles.TransactionItem"] == {"deleted": 1}
    assert receipt.counts["profiles.RejectedEvent"] == {"deleted": 3}
    assert receipt.counts["profiles.Profile"] == {"deleted": 1}
    assert receipt.counts["segments.Membership"] == {"deleted": 1}
    assert receipt.counts["segments.MembershipChange"] == {"deleted": 1}
    assert receipt.counts["segments.Timer"] == {"deleted": 1}
    assert receipt.counts["segments.WebhookDelivery"] == {"changed": 2}
    assert receipt.counts["content.Exposure"] == {"deleted": 1}
    assert Exposure.objects.filter(profile=bob).count() == 1
    # Her upload is gone (the history row stays), Bob's is kept; her row error is gone.
    assert receipt.counts["profiles.ImportJob"] == {"changed": 1}
    assert receipt.counts["profiles.ImportRowError"] == {"deleted": 1}
    both, bob_only = ImportJob.objects.order_by("id")
    assert (both.file_path, both.file_removed_reason, both.rows_loaded) == ("", "erasure", 0)
    assert not (media / "imports" / "both").exists()
    assert Path(bob_only.file_path).exists()
    assert ImportRowError.objects.count() == 2
    # The delivery naming both keeps Bob; the one naming only Ada is gone.
    delivery = WebhookDelivery.objects.get()
    assert (delivery.profile_count, delivery.payload["profiles"][0]["profile_id"]) == (1, str(bob.id))
    assert Membership.objects.filter(profile=bob).count() == 1
    assert receipt.counts["consent.AuditEntry"] == {"changed": 1}
    assert receipt.counts["consent.DataSubjectRequest"] == {"changed": 2}
    assert (receipt.performed_by, receipt.profiles, receipt.suppressed_identifiers) == (users["cora"], 1, 5)
    request.refresh_from_db()
    assert (request.status, request.subject_value, request.profile_id) == ("completed", None, None)
    assert request.outcome.startswith("erased: ")


def test_a_later_event_or_import_finds_the_erased_identifiers_suppressed(ada_and_bob, users):
    ada, _ = ada_and_bob
    request = requests.dsr_create(type="erasure", identifier_kind="email", identifier=ADA["email"],
                                  actor=users["cora"])
    requests.dsr_erase(request=request, actor=users["cora"])
    incoming = [("email", hash_of("email", ADA["email"].upper())), ("user_id", hash_of("user_id", ADA["user_id"])),
                ("email", hash_of("email", "bob@example.com"))]
    assert suppressed_identifiers(identifiers=incoming) == set(incoming[:2])


def test_anonymisation_keeps_behaviour_under_an_unlinkable_profile(ada_and_bob, users):
    ada, bob = ada_and_bob
    request = requests.dsr_create(type="anonymisation", identifier_kind="email", identifier=ADA["email"],
                                  actor=users["cora"])
    outcome = requests.dsr_anonymise(request=request, actor=users["cora"])
    assert not Profile.objects.filter(id=ada.id).exists()
    events = Event.objects.exclude(profile_id=bob.id)
    assert events.count() == 3
    anonymous = Profile.objects.get(id=events.first().profile_id)
    assert (anonymous.first_name, anonymous.last_name, anonymous.postcode, anonymous.city) == (None, None, "", "")
    assert anonymous.identities.count() == 0
    for event in events:
        assert (event.anonymous_id, event.user_id, event.traits) == ("", "", {})
        assert event.properties == {"sku": "A1"}
        assert event.context == {"location": {"country": "GB"}}
    purchase = Transaction.objects.get(profile=anonymous)
    assert purchase.order_id.startswith("anon-") and purchase.items.count() == 1
    assert ComputedTraits.objects.get(profile=anonymous).order_count == 1
    for model in (Profile, Event, Transaction, Identity, RejectedEvent, AuditEntry, DataSubjectRequest):
        text = _table_text(model)
        assert not any(needle.lower() in text for needle in ADA_STRINGS + [str(ada.id)]), model
    receipt = ErasureReceipt.objects.get(pk=outcome.receipt_id)
    assert receipt.kind == "anonymisation"
    assert receipt.counts["profiles.Event"] == {"changed": 3}
    assert receipt.counts["profiles.Profile"] == {"changed": 1}
    assert receipt.counts["profiles.Identity"] == {"deleted": 4}
    assert _counts([bob.id])["events"] == 3


def test_receipts_hold_no_personal_data(ada_and_bob, users):
    request = requests.dsr_create(type="erasure", identifier_kind="email", identifier=ADA["email"],
                                  actor=users["cora"])
    requests.dsr_erase(request=request, actor=users["cora"])
    text = _table_text(ErasureReceipt) + _table_text(AuditEntry)
    assert not any(needle.lower() in text for needle in ADA_STRINGS)


def test_an_unknown_keep_hashed_location_stops_erasure_before_anything_is_deleted(ada_and_bob, users, monkeypatch):
    from cdp import pii
    from consent.services import person as module

    ada, _ = ada_and_bob
    original = pii.registry

    def with_extra():
        result = original()
        result.locations.append(pii.PiiLocation("profiles.Product", "", on_erasure="keep_hashed"))
        return result

    monkeypatch.setattr(module, "registry", with_extra)
    with pytest.raises(Exception, match="profiles.Product is keep_hashed but consent has no handler"):
        persons.person_erase(person=persons.person_find(kind="email", value=ADA["email"]))
    assert Profile.objects.filter(id=ada.id).exists() and Event.objects.filter(profile_id=ada.id).count() == 3


def test_access_export_is_built_by_a_real_worker_and_sealed_at_rest(media, celery_worker_process, users):
    ada = make_person(**ADA, first_name="Zenobia", last_name="Quixotic")
    _with_data(ada, ADA, "ada")
    decide("email", ADA["email"], {"analytics": True})
    request = requests.dsr_create(type="access", identifier_kind="email", identifier=ADA["email"],
                                  actor=users["cora"])
    with transaction.atomic():
        requests.dsr_access_start(request=request, actor=users["cora"])
    done = wait_until(lambda: DataSubjectRequest.objects.filter(pk=request.pk, status="completed").first(),
                      timeout=60)
    assert done.result_file.startswith("dsr/DSR-") and done.result_expires_at > timezone.now() + timedelta(days=29)
    stored = (media / done.result_file).read_bytes()
    assert stored.startswith(b"e1.") and b"zenobia" not in stored.lower()
    data = requests.dsr_result_read(request=done, actor=users["cora"])
    archive = zipfile.ZipFile(io.BytesIO(data))
    names = set(archive.namelist())
    assert {"README.txt", "consent_history.json", "consent_history.csv", "profiles.Profile.json",
            "profiles.Event.csv", "profiles.Identity.json", "profiles.Transaction.json"} <= names
    import orjson
    identities = orjson.loads(archive.read("profiles.Identity.json"))
    assert sorted(i["value"] for i in identities) == sorted(["zenobia.quixote@example.com", "+4915123456789",
                                                             "u-zq-4711", "anon-zq-0815"])
    profile_rows = orjson.loads(archive.read("profiles.Profile.json"))
    assert [(p["first_name"], p["last_name"]) for p in profile_rows] == [("Zenobia", "Quixotic")]
    assert len(orjson.loads(archive.read("profiles.Event.json"))) == 3
    history = orjson.loads(archive.read("consent_history.json"))
    assert [(h["purpose"], h["granted"], h["identifier_kind"]) for h in history] == [("analytics", True, "email")]
    assert "profiles.Event: 3" in archive.read("README.txt").decode()
    assert AuditEntry.objects.filter(action="dsr.downloaded", object_id=str(request.pk)).count() == 1
    assert "succeeded" in "".join(celery_worker_process.output)


def test_the_workflow_due_dates_and_refusals(db, users):
    request = requests.dsr_create(type="access", identifier_kind="email", identifier="nobody@example.com",
                                  actor=users["cora"])
    assert request.due_at - request.received_at == timedelta(days=30)
    assert (request.profile_id, request.status, request.reference) == (None, "received", f"DSR-{request.pk:06d}")
    with pytest.raises(requests.RequestError, match="give a reason"):
        requests.dsr_reject(request=request, actor=users["cora"], reason="  ")
    requests.dsr_reject(request=request, actor=users["cora"], reason="identity not verified")
    assert (request.status, request.outcome, request.handler) == ("rejected", "identity not verified", users["cora"])
    with pytest.raises(requests.RequestError, match="already closed"):
        requests.dsr_access_start(request=request, actor=users["cora"])
    with pytest.raises(requests.RequestError, match="only erasure requests erase"):
        requests.dsr_erase(request=request, actor=users["cora"])
    with pytest.raises(ConsentInputError, match="not usable"):
        requests.dsr_create(type="erasure", identifier_kind="email", identifier="not-an-email", actor=users["cora"])
    with pytest.raises(ConsentInputError, match="no profile has that id"):
        requests.dsr_create(type="erasure", identifier_kind="profile_id",
                            identifier="7b0e0c3e-1f2a-4f3b-9a7c-2d8e6f1a0b3c", actor=users["cora"])
    assert DataSubjectRequest.objects.count() == 1
    assert list(AuditEntry.objects.order_by("id").values_list("action", flat=True)) == ["dsr.created", "dsr.rejected"]


def test_rectification_is_audited_with_field_names_only(db, users):
    ada = make_person(email="ada@example.com", first_name="Ada", last_name="Lovelace")
    changed = requests.profile_rectify(profile_id=ada.id, changes={"last_name": "King", "country": "gb",
                                                                   "birth_year": "1990"}, actor=users["dan"])
    ada.refresh_from_db()
    assert (ada.last_name, ada.country, ada.birth_year) == ("King", "GB", 1990)
    assert sorted(changed) == ["birth_year", "country", "last_name"]
    entry = AuditEntry.objects.get(action="profile.rectified")
    assert entry.details == {"fields": changed, "request": None} and "King" not in str(entry.details)
    for bad in ({"birth_year": "1066"}, {"country": "Britain"}, {"email": "x@example.com"}):
        with pytest.raises(ConsentInputError):
            requests.profile_rectify(profile_id=ada.id, changes=bad, actor=users["dan"])
    ada.refresh_from_db()
    assert (ada.last_name, ada.country, ada.birth_year) == ("King", "GB", 1990)


def test_retention_deletes_old_rows_of_one_event_type_in_batches(db, settings):
    settings.CDP_RETENTION_BATCH = 100
    shop = source()
    now = datetime.now(UTC)
    rows = [Event(timestamp=now - timedelta(days=40 if i % 2 else 5), received_at=now, source=shop,
                  message_id=f"r-{i}", type="page" if i % 3 else "track", name="Home") for i in range(900)]
    Event.objects.bulk_create(rows)
    old_pages = Event.objects.filter(type="page", timestamp__lt=now - timedelta(days=30)).count()
    rule = RetentionRule.objects.create(target="events", event_type="page", days=30)
    run = retention_rule_run(rule=rule, max_batches=2)
    assert (run.deleted, run.finished) == (200, False)  # bounded: the task re-enqueues itself
    run = retention_rule_run(rule=rule)
    assert (run.deleted, run.finished) == (old_pages - 200, True)
    assert Event.objects.filter(type="page", timestamp__lt=now - timedelta(days=30)).count() == 0
    assert old_pages == 300 and Event.objects.count() == 900 - old_pages
    rule.refresh_from_db()
    assert rule.last_result["deleted"] == old_pages - 200 and rule.last_run_at is not None


def test_retention_anonymises_inactive_profiles(db):
    stale = make_person(email="old@example.com", last_seen_at=datetime.now(UTC) - timedelta(days=800))
    fresh = make_person(email="new@example.com", last_seen_at=datetime.now(UTC))
    rule = RetentionRule.objects.create(target="inactive_profiles", days=730, action="anonymise")
    run = retention_rule_run(rule=rule)
    assert run.profiles == 1
    assert not Profile.objects.filter(id=stale.id).exists() and Profile.objects.filter(id=fresh.id).exists()
    assert Identity.objects.filter(kind="email").count() == 1
    assert ErasureReceipt.objects.get().retention_rule == rule
    assert SuppressionEntry.objects.count() == 0  # retention does not suppress: the person may come back


def test_expired_access_files_are_deleted(ada_and_bob):
    request = DataSubjectRequest.objects.exclude(result_file="").get()
    path = request.result_file
    assert default_storage.exists(path)
    assert requests.dsr_files_expire(now=timezone.now() + timedelta(days=31)) == 1
    assert not default_storage.exists(path)
    request.refresh_from_db()
    assert (request.result_file, request.outcome) == ("", "export expired and deleted")
