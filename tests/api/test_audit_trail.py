"""The audit export and its tamper evidence, through the local gateway."""

from __future__ import annotations

import csv
import io
import json
from typing import Any
from urllib.parse import urlencode

import pytest

from mfa_core import audit_trail, cli, members, runtime
from mfa_core.audit import RequestContext
from mfa_core.clock import ManualClock
from mfa_core.store.models import AuditDigestModel, AuditModel, OrgModel
from tests.api.conftest import START, add_member, add_org
from tests.api.harness import Client, Flow, Member, Reply
from tests.api.test_policy import DAY, set_policy

HOUR = 3600


def _stored(org_id: str) -> list[AuditModel]:
    return list(AuditModel.query(org_id))


def _export(client: Client, token: str, org_id: str = "acme", **params: Any) -> Reply:
    query = f"?{urlencode(params)}" if params else ""
    return client.get(f"/v1/orgs/{org_id}/audit{query}", token=token)


def _jsonl(reply: Reply) -> list[dict[str, Any]]:
    return [json.loads(line) for line in reply.text.splitlines()]


def _admin_token(flow: Flow, member: Member) -> str:
    token: str = flow.login_ok(member, "authenticated")["access_token"]
    return token


def _create_member(org_id: str, email: str, *, user_agent: str) -> str:
    created = members.create_member(
        runtime.services(),
        org_id=org_id,
        email=email,
        role="viewer",
        password="correct horse battery staple",
        actor="operator",
        context=RequestContext(source_ip="127.0.0.1", user_agent=user_agent, request_id="r"),
    )
    return created.user.user_id


def test_export_jsonl_round_trip(client: Client, flow: Flow, acme: Member) -> None:
    token = _admin_token(flow, acme)

    expected = [audit_trail.export_record(item) for item in _stored("acme")]

    reply = _export(client, token)

    assert reply.status == 200, reply.text
    assert reply.header("content-type") == "application/x-ndjson"
    assert _jsonl(reply) == expected
    assert len(expected) >= 3
    assert reply.header("x-next-cursor") is None


def test_export_csv_round_trip_and_injection(client: Client, flow: Flow, acme: Member) -> None:
    _create_member("acme", "formula@acme.example", user_agent='=HYPERLINK("x")')
    token = _admin_token(flow, acme)
    stored = [audit_trail.export_record(item) for item in _stored("acme")]

    reply = _export(client, token, format="csv")

    assert reply.status == 200, reply.text
    assert (
        reply.header(
            "content-type",
        )
        == "text/csv"
    )
    rows = list(csv.reader(io.StringIO(reply.text)))
    assert tuple(rows[0]) == audit_trail.FIELDS
    assert len(rows) - 1 == len(stored)
    for row, record in zip(rows[1:], stored, strict=True):
        for name, cell in zip(audit_trail.FIELDS, row, strict=True):
            value = record[name]
            if value is None:
                assert cell == "", name
            elif isinstance(value, dict):
                assert json.loads(cell) == value, name
            elif isinstance(value, int | float):
                assert float(cell) == value, name
            elif value.startswith(("=", "+", "-", "@")):
                assert cell == "'" + value, name
            else:
                assert cell == value, name
    assert '\'=HYPERLINK("x")' in [row[audit_trail.FIELDS.index("user_agent")] for row in rows]


def test_export_filters(client: Client, flow: Flow, acme: Member, clock: ManualClock) -> None:
    clock.set(START + HOUR)
    other = _create_member("acme", "later@acme.example", user_agent="tests")
    clock.set(START + 2 * HOUR)
    token = _admin_token(flow, acme)

    by_type = _jsonl(_export(client, token, event_type="member.create"))
    assert {record["event_type"] for record in by_type} == {"member.create"}
    assert len(by_type) == 2

    by_user = _jsonl(_export(client, token, user_id=other))
    assert [record["user_id"] for record in by_user] == [other]

    by_outcome = _jsonl(_export(client, token, outcome="failure"))
    assert by_outcome == []

    window = _jsonl(
        _export(
            client, token, **{"from": "2027-01-15T08:30:00Z", "to": "2027-01-15T09:30:00+00:00"}
        )
    )
    assert [record["user_id"] for record in window] == [other]

    before = _jsonl(_export(client, token, to="2027-01-15T08:00:00Z"))
    assert {record["event_type"] for record in before} == {"org.create", "member.create"}


def test_export_pagination(client: Client, flow: Flow, acme: Member) -> None:
    for number in range(4):
        _create_member("acme", f"m{number}@acme.example", user_agent="tests")
    token = _admin_token(flow, acme)
    expected = [audit_trail.export_record(item) for item in _stored("acme")]

    collected: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 2}
    pages = 0
    while True:
        reply = _export(client, token, **params)
        assert reply.status == 200, reply.text
        page = _jsonl(reply)
        assert len(page) <= 2
        collected.extend(page)
        pages += 1
        cursor = reply.header("x-next-cursor")
        if cursor is None:
            break
        params["next"] = cursor

    # Each page is audited, so later pages may hold the export events of earlier ones.
    exports = [record for record in collected if record["event_type"] == "audit.export"]
    assert [record for record in collected if record not in exports] == expected
    assert len(exports) < pages
    assert pages >= (len(expected) + 1) // 2


def test_export_is_audited(client: Client, flow: Flow, acme: Member) -> None:
    token = _admin_token(flow, acme)

    reply = _export(client, token, event_type="member.create", format="csv", limit=5)

    assert reply.status == 200, reply.text
    [event] = [item for item in _stored("acme") if item.event_type == "audit.export"]
    assert event.actor == f"user:{acme.user_id}"
    assert event.outcome == "success"
    assert event.session_id is not None
    assert event.details.as_dict() == {"event_type": "member.create", "format": "csv", "events": 1}


def test_event_retention_follows_the_policy(acme: Member, clock: ManualClock) -> None:
    set_policy("acme", enforcement="optional", audit_retention_days=90)
    clock.set(START + HOUR)
    user_id = _create_member("acme", "kept@acme.example", user_agent="tests")

    [created] = [item for item in _stored("acme") if item.user_id == user_id]
    assert created.expires_at == int(created.created_at) + 90 * DAY
    [original] = [item for item in _stored("acme") if item.event_type == "org.create"]
    assert original.expires_at == int(original.created_at) + 400 * DAY


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "2027-01-15T08:00:00"}, "from"),
        ({"to": "yesterday"}, "to"),
        ({"from": "2027-01-16T00:00:00Z", "to": "2027-01-15T00:00:00Z"}, "from"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"format": "xml"}, "format"),
        ({"outcome": "maybe"}, "outcome"),
        ({"next": "not-a-cursor"}, "next"),
        ({"user_id": "a b"}, "user_id"),
        ({"fromm": "2027-01-15T08:00:00Z"}, "fromm"),
    ],
)
def test_export_rejects_bad_parameters(
    client: Client, flow: Flow, acme: Member, params: dict[str, str], field: str
) -> None:
    reply = _export(client, _admin_token(flow, acme), **params)

    assert reply.status == 400, reply.text
    assert reply.body["field"] == field


def test_export_other_org_not_found(client: Client, flow: Flow, acme: Member) -> None:
    add_org("globex")
    token = _admin_token(flow, acme)

    assert _export(client, token, org_id="globex").status == 404
    assert client.get("/v1/orgs/globex/audit/verify", token=token).status == 404


def test_export_forbidden_for_non_admin(client: Client, flow: Flow, acme: Member) -> None:
    viewer = add_member("acme", "viewer@acme.example", role="viewer")
    token = _admin_token(flow, viewer)

    assert _export(client, token).status == 403
    assert client.get("/v1/orgs/acme/audit/verify", token=token).status == 403


def test_export_checks_caller_before_query(client: Client, flow: Flow, acme: Member) -> None:
    viewer = add_member("acme", "viewer@acme.example", role="viewer")
    add_org("globex")
    bad = {"format": "xml"}

    anonymous = client.get("/v1/orgs/acme/audit?format=xml")
    other_org = _export(client, _admin_token(flow, acme), org_id="globex", **bad)
    non_admin = _export(client, _admin_token(flow, viewer), **bad)

    assert anonymous.status == 401
    assert other_org.status == 404
    assert non_admin.status == 403


# --- Tamper evidence ---


def _trail_over_hours(clock: ManualClock) -> None:
    """Write events in three distinct hours after acme's creation, then seal them all."""
    for hour in (1, 2, 3):
        clock.set(START + hour * HOUR + 60)
        _create_member("acme", f"h{hour}a@acme.example", user_agent="tests")
        _create_member("acme", f"h{hour}b@acme.example", user_agent="tests")
    clock.set(START + 4 * HOUR + 300)
    assert audit_trail.seal_all(runtime.services()) == 4
    assert audit_trail.seal_all(runtime.services()) == 0


def _verify(client: Client, token: str, **params: str) -> dict[str, Any]:
    query = f"?{urlencode(params)}" if params else ""
    reply = client.get(f"/v1/orgs/acme/audit/verify{query}", token=token)
    assert reply.status == 200, reply.text
    body: dict[str, Any] = reply.body
    return body


def _event_in_hour(hour: int, index: int = 0) -> AuditModel:
    low = f"{(START + hour * HOUR) * 1000:015d}-"
    high = f"{(START + (hour + 1) * HOUR) * 1000:015d}-"
    return list(AuditModel.query("acme", AuditModel.event_id.between(low, high)))[index]


@pytest.fixture
def sealed(client: Client, flow: Flow, acme: Member, clock: ManualClock) -> str:
    _trail_over_hours(clock)
    return _admin_token(flow, acme)


def test_verify_passes_untouched_trail(client: Client, sealed: str) -> None:
    report = _verify(client, sealed)

    assert report["valid"] is True, report
    assert report["periods_checked"] == 4
    # The admin's login in hour 4 is not sealed yet.
    assert report["unsealed_from"] == "2027-01-15T12"


def test_verify_reports_modified_event(client: Client, sealed: str) -> None:
    item = _event_in_hour(2)
    item.outcome = "failure"
    item.save()

    report = _verify(client, sealed)

    assert report["valid"] is False
    assert report["modified"] == [item.event_id]
    assert report["deleted"] == report["inserted"] == []


def test_verify_reports_deleted_event(client: Client, sealed: str) -> None:
    item = _event_in_hour(1)
    item.delete()

    report = _verify(client, sealed)

    assert report["deleted"] == [item.event_id]
    assert report["valid"] is False


def test_verify_tells_expired_events_from_deleted_ones(
    client: Client, flow: Flow, acme: Member, clock: ManualClock
) -> None:
    set_policy("acme", enforcement="optional", audit_retention_days=90)
    _trail_over_hours(clock)
    short = _event_in_hour(2)
    assert short.expires_at == int(short.created_at) + 90 * DAY
    # TTL removes events some time after they expire; here, at once.
    clock.set(START + 91 * DAY)
    for item in _stored("acme"):
        if item.expires_at <= clock.now():
            item.delete()
    token = _admin_token(flow, acme)

    report = _verify(
        client, token, **{"from": "2027-01-15T08:00:00Z", "to": "2027-01-15T11:00:00Z"}
    )

    assert report["valid"] is True, report
    assert report["expired"] == 6
    assert report["deleted"] == []


def test_verify_reports_event_deleted_before_its_expiry(
    client: Client, flow: Flow, acme: Member, clock: ManualClock
) -> None:
    _trail_over_hours(clock)
    # Events are kept for 400 days by default; one of hour 2 is deleted at 399.
    clock.set(START + 399 * DAY)
    item = _event_in_hour(2)
    item.delete()

    report = _verify(
        client,
        _admin_token(flow, acme),
        **{"from": "2027-01-15T08:00:00Z", "to": "2027-01-15T11:00:00Z"},
    )

    assert report["deleted"] == [item.event_id]
    assert report["valid"] is False


def test_verify_reports_a_shortened_expiry(client: Client, sealed: str) -> None:
    item = _event_in_hour(1)
    item.expires_at = int(item.created_at) + 60
    item.save()

    report = _verify(client, sealed)

    assert report["modified"] == [item.event_id]


def test_verify_after_the_sealing_key_left_the_jwks(
    client: Client, flow: Flow, acme: Member, clock: ManualClock
) -> None:
    _trail_over_hours(clock)
    svc = runtime.services()
    sealing_kid = AuditDigestModel.get("acme", "2027-01-15T09").kid
    # Published keys are kept for a day after a rotation; two rotations days apart drop it.
    clock.set(START + 2 * DAY)
    svc.signing_keys.rotate()
    clock.set(START + 4 * DAY)
    svc.signing_keys.rotate()
    assert sealing_kid not in svc.signing_keys.public_keys()
    token = _admin_token(flow, acme)

    report = _verify(
        client, token, **{"from": "2027-01-15T08:00:00Z", "to": "2027-01-15T11:00:00Z"}
    )

    assert report["valid"] is True, report
    assert report["periods_checked"] == 4


def test_verify_reports_inserted_event(client: Client, sealed: str) -> None:
    original = _event_in_hour(2)
    forged_id = f"{(START + 2 * HOUR + 120) * 1000:015d}-{'0' * 16}"
    forged = AuditModel(
        "acme",
        forged_id,
        **{
            name: value
            for name, value in original.attribute_values.items()
            if name not in {"org_id", "event_id"}
        },
    )
    forged.save()

    report = _verify(client, sealed)

    assert report["inserted"] == [forged_id]
    assert report["valid"] is False


def _forge(event_id: str) -> None:
    """Copy an hour-2 event under `event_id`, as someone with write access to the table could."""
    original = _event_in_hour(2)
    AuditModel(
        "acme",
        event_id,
        **{
            name: value
            for name, value in original.attribute_values.items()
            if name not in {"org_id", "event_id"}
        },
    ).save()


@pytest.mark.parametrize(
    "forged_id",
    [
        # Malformed ids: "+" sorts before "-", so the first sorts between two hours' ids.
        f"{(START + 2 * HOUR) * 1000:015d}+forged",
        f"{(START + 2 * HOUR + 120) * 1000:015d}",
        # Before the org existed, and far in the future.
        f"{(START - 30 * 24 * HOUR) * 1000:015d}-{'0' * 16}",
        f"{(START + 1000 * HOUR) * 1000:015d}-{'0' * 16}",
        "zzz",
    ],
)
def test_verify_reports_insertion_outside_hours(
    client: Client, sealed: str, forged_id: str
) -> None:
    _forge(forged_id)

    report = _verify(client, sealed)

    assert forged_id in report["inserted"]
    assert report["valid"] is False


def test_verify_reports_swapped_pair(client: Client, sealed: str) -> None:
    first, second = _event_in_hour(3, 0), _event_in_hour(3, 1)
    first.user_id, second.user_id = second.user_id, first.user_id
    first.user_key, second.user_key = second.user_key, first.user_key
    first.save()
    second.save()

    report = _verify(client, sealed)

    assert sorted(report["modified"]) == sorted([first.event_id, second.event_id])


def test_verify_reports_removed_digest(client: Client, sealed: str) -> None:
    AuditDigestModel.get("acme", "2027-01-15T09").delete()

    report = _verify(client, sealed)

    assert {"period": "2027-01-15T09", "problem": "digest missing"} in report["broken_links"]
    assert {"period": "2027-01-15T10", "problem": "previous digest differs"} in report[
        "broken_links"
    ]
    assert report["valid"] is False


def test_verify_reports_forged_digest(client: Client, sealed: str) -> None:
    digest = AuditDigestModel.get("acme", "2027-01-15T10")
    document = json.loads(digest.document)
    document["count"] = 0
    document["events"] = []
    digest.document = json.dumps(document)
    digest.save()

    report = _verify(client, sealed)

    assert report["bad_signatures"] == ["2027-01-15T10"]
    assert report["valid"] is False


@pytest.mark.parametrize("signature", ["x", "é.é.é"])
def test_malformed_signature_reported_and_sealed_past(
    client: Client, flow: Flow, acme: Member, clock: ManualClock, signature: str
) -> None:
    _trail_over_hours(clock)
    latest = AuditDigestModel.get("acme", "2027-01-15T11")
    latest.signature = signature
    latest.save()
    add_org("globex")
    clock.set(START + 5 * HOUR + 300)

    # The next hour links to the tampered digest; other orgs are sealed as usual.
    assert audit_trail.seal_all(runtime.services()) == 2
    report = _verify(client, _admin_token(flow, acme))

    assert report["bad_signatures"] == ["2027-01-15T11"]
    assert report["broken_links"] == []
    assert report["valid"] is False
    assert [digest.period for digest in AuditDigestModel.query("globex")] == ["2027-01-15T12"]


def test_malformed_items_hold_up_only_their_org(
    client: Client, flow: Flow, acme: Member, clock: ManualClock
) -> None:
    _trail_over_hours(clock)
    add_org("globex")
    add_org("initech")
    OrgModel("acme").update(actions=[OrgModel.audit_sealed_through.set("not an hour")])
    clock.set(START + 4 * HOUR + 600)
    _create_member("initech", "late@initech.example", user_agent="tests")
    # An event written outside the service, without the TTL attribute.
    client_dynamodb = AuditModel._get_connection().connection.client
    client_dynamodb.update_item(
        TableName=AuditModel.Meta.table_name,
        Key={"org_id": {"S": "initech"}, "event_id": {"S": _stored("initech")[-1].event_id}},
        UpdateExpression="REMOVE expires_at",
    )
    clock.set(START + 5 * HOUR + 300)

    assert audit_trail.seal_all(runtime.services()) == 1

    assert [digest.period for digest in AuditDigestModel.query("globex")] == ["2027-01-15T12"]
    assert list(AuditDigestModel.query("initech")) == []
    assert len(list(AuditDigestModel.query("acme"))) == 4


def test_verify_reports_event_of_wrong_type(client: Client, sealed: str) -> None:
    item = _event_in_hour(2)
    # A map attribute overwritten with a string, which pynamodb cannot load.
    AuditModel._get_connection().connection.client.update_item(
        TableName=AuditModel.Meta.table_name,
        Key={"org_id": {"S": "acme"}, "event_id": {"S": item.event_id}},
        UpdateExpression="SET details = :details",
        ExpressionAttributeValues={":details": {"S": "rewritten"}},
    )

    report = _verify(client, sealed)

    assert report["modified"] == [item.event_id]
    assert report["valid"] is False


def test_hour_sealed_after_its_last_writes(
    client: Client, flow: Flow, acme: Member, clock: ManualClock
) -> None:
    clock.set(START + 2 * HOUR + 1)
    assert audit_trail.seal_all(runtime.services()) == 1
    # A request that read the clock just before 10:00 writes its event just after.
    clock.set(START + 2 * HOUR - 1)
    _create_member("acme", "late@acme.example", user_agent="tests")
    clock.set(START + 2 * HOUR + 300)

    assert audit_trail.seal_all(runtime.services()) == 1
    report = _verify(client, _admin_token(flow, acme))

    assert report["inserted"] == []
    assert report["valid"] is True, report


def test_verify_with_time_window(client: Client, sealed: str) -> None:
    _event_in_hour(1).delete()

    report = _verify(
        client, sealed, **{"from": "2027-01-15T10:00:00Z", "to": "2027-01-15T11:59:59Z"}
    )

    assert report["valid"] is True, report
    assert report["periods_checked"] == 2


@pytest.mark.parametrize(
    "window",
    [
        {"from": "2030-01-01T00:00:00Z"},
        {"to": "2020-01-01T00:00:00Z"},
        {"from": "2020-01-01T00:00:00Z", "to": "2020-01-02T00:00:00Z"},
    ],
)
def test_verify_rejects_window_outside_lifetime(
    client: Client, sealed: str, window: dict[str, str]
) -> None:
    reply = client.get(f"/v1/orgs/acme/audit/verify?{urlencode(window)}", token=sealed)

    assert reply.status == 400, reply.text
    assert reply.body["field"] == "from"


def test_cli_verify_exit_codes(sealed: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["audit", "verify", "--org-id", "acme"]) == 0
    assert json.loads(capsys.readouterr().out)["valid"] is True

    deleted = _event_in_hour(2)
    deleted.delete()

    assert cli.main(["audit", "verify", "--org-id", "acme"]) == 1
    assert json.loads(capsys.readouterr().out)["deleted"] == [deleted.event_id]
    window = ["--from", "2027-01-15T11:00:00Z", "--to", "2027-01-15T11:59:00Z"]
    assert cli.main(["audit", "verify", "--org-id", "acme", *window]) == 0
    assert cli.main(["audit", "verify", "--org-id", "acme", "--from", "noon"]) == 2
    assert "(from)" in capsys.readouterr().err
    assert cli.main(["audit", "verify", "--org-id", "nobody"]) == 2


def test_verify_reports_all_digests_removed(client: Client, sealed: str) -> None:
    for digest in AuditDigestModel.query("acme"):
        digest.delete()

    report = _verify(client, sealed)

    missing = [link["period"] for link in report["broken_links"]]
    assert missing == ["2027-01-15T08", "2027-01-15T09", "2027-01-15T10"]
    # The sealer may not have reached the hour that ended five minutes ago.
    assert report["unsealed_from"] == "2027-01-15T11"
    assert report["valid"] is False


def test_verify_rejects_long_window(
    client: Client, flow: Flow, acme: Member, clock: ManualClock
) -> None:
    clock.set(START + 40 * 24 * HOUR)
    reply = client.get(
        "/v1/orgs/acme/audit/verify?from=2027-01-15T08:00:00Z", token=_admin_token(flow, acme)
    )

    assert reply.status == 400, reply.text
    assert reply.body["field"] == "from"


def test_verify_reports_digest_moved(client: Client, sealed: str) -> None:
    source = AuditDigestModel.get("acme", "2027-01-15T08")
    target = AuditDigestModel.get("acme", "2027-01-15T09")
    target.document, target.signature = source.document, source.signature
    target.save()

    report = _verify(client, sealed)

    assert {"period": "2027-01-15T09", "problem": "digest of another period"} in report[
        "broken_links"
    ]
    assert report["valid"] is False


@pytest.fixture
def busy_hour(flow: Flow, acme: Member, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> str:
    """Seal an hour of five events in parts of two, then return an admin token."""
    monkeypatch.setattr(audit_trail, "EVENTS_PER_PART", 2)
    clock.set(START + HOUR + 60)
    for number in range(5):
        _create_member("acme", f"busy{number}@acme.example", user_agent="tests")
    clock.set(START + 2 * HOUR + 300)
    assert audit_trail.seal_all(runtime.services()) == 2
    return _admin_token(flow, acme)


def test_busy_hour_is_sealed_in_linked_parts(client: Client, busy_hour: str) -> None:
    keys = [digest.period for digest in AuditDigestModel.query("acme")]
    assert keys == ["2027-01-15T08", "2027-01-15T09", "2027-01-15T09+01", "2027-01-15T09+02"]

    report = _verify(client, busy_hour)

    assert report["valid"] is True, report
    assert report["periods_checked"] == 2


def test_verify_reports_removed_digest_part(client: Client, busy_hour: str) -> None:
    AuditDigestModel.get("acme", "2027-01-15T09+01").delete()

    report = _verify(client, busy_hour)

    assert {"period": "2027-01-15T09", "problem": "digest part missing"} in report["broken_links"]
    assert {"period": "2027-01-15T09+02", "problem": "previous digest differs"} in report[
        "broken_links"
    ]
    assert report["deleted"] == []
    assert len(report["inserted"]) == 2


def test_verify_reports_event_of_later_part(client: Client, busy_hour: str) -> None:
    item = _event_in_hour(1, index=4)
    item.reason = "rewritten"
    item.save()

    report = _verify(client, busy_hour)

    assert report["modified"] == [item.event_id]
    assert report["valid"] is False


def test_resealing_a_sealed_hour_writes_nothing(busy_hour: str) -> None:
    svc = runtime.services()

    assert audit_trail.seal(svc, "acme", "2027-01-15T09") is False
    assert len(list(AuditDigestModel.query("acme"))) == 4


def test_deleted_latest_digest_is_not_written_again(
    client: Client, flow: Flow, acme: Member, clock: ManualClock
) -> None:
    _trail_over_hours(clock)
    latest = AuditDigestModel.get("acme", "2027-01-15T11")
    latest.delete()
    clock.set(START + 5 * HOUR + 300)

    # The next run seals the following hour only.
    assert audit_trail.seal_all(runtime.services()) == 1
    report = _verify(client, _admin_token(flow, acme))

    assert {"period": "2027-01-15T11", "problem": "digest missing"} in report["broken_links"]
    assert report["valid"] is False


def test_cli_seals_and_nothing_checked_is_not_valid(
    acme: Member, clock: ManualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["audit", "verify", "--org-id", "acme"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["periods_checked"] == 0
    assert report["valid"] is False

    clock.set(START + 60 * HOUR + 300)
    assert cli.main(["audit", "seal", "--org-id", "acme"]) == 0
    assert json.loads(capsys.readouterr().out) == {"org_id": "acme", "hours_sealed": 60}
    assert cli.main(["audit", "seal"]) == 0
    assert json.loads(capsys.readouterr().out)["hours_sealed"] == 0
    assert cli.main(["audit", "verify", "--org-id", "acme"]) == 0
    assert cli.main(["audit", "seal", "--org-id", "nobody"]) == 2


def test_verify_rejects_unknown_parameter(client: Client, flow: Flow, acme: Member) -> None:
    reply = client.get("/v1/orgs/acme/audit/verify?form=2027-01-15", token=_admin_token(flow, acme))

    assert reply.status == 400, reply.text
    assert reply.body["field"] == "form"


def test_cursor_outside_a_new_window(
    client: Client, flow: Flow, acme: Member, clock: ManualClock
) -> None:
    clock.set(START + HOUR)
    later = _create_member("acme", "later@acme.example", user_agent="tests")
    token = _admin_token(flow, acme)
    first_page = _export(client, token, limit=1)
    cursor = first_page.header("x-next-cursor")
    assert cursor is not None

    # The cursor lies before the new window: the page starts at the window.
    moved = _export(client, token, next=cursor, **{"from": "2027-01-15T08:30:00Z"})
    assert moved.status == 200, moved.text
    # The login and the first export share the millisecond of the member's creation, and ids
    # of one millisecond sort in random order.
    assert later in [record["user_id"] for record in _jsonl(moved)]
    assert min(record["created_at"] for record in _jsonl(moved)) >= START + HOUR / 2
    # The cursor lies after the window: nothing is left in it.
    past = _export(client, token, next=cursor, to="2027-01-15T07:00:00Z")
    assert past.status == 200, past.text
    assert past.text == ""


def test_hour_of_many_parts_links_in_order(
    client: Client, flow: Flow, acme: Member, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_trail, "EVENTS_PER_PART", 1)
    clock.set(START + HOUR + 60)
    for number in range(12):
        _create_member("acme", f"many{number}@acme.example", user_agent="tests")
    clock.set(START + 3 * HOUR + 300)
    assert audit_trail.seal_all(runtime.services()) == 3
    assert AuditDigestModel.get("acme", "2027-01-15T09+11").period == "2027-01-15T09+11"

    report = _verify(client, _admin_token(flow, acme))

    assert report["valid"] is True, report


def test_hour_over_the_part_limit_stays_unsealed(
    client: Client, flow: Flow, acme: Member, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_trail, "EVENTS_PER_PART", 2)
    monkeypatch.setattr(audit_trail, "MAX_PARTS", 2)
    clock.set(START + HOUR + 60)
    for number in range(5):
        _create_member("acme", f"over{number}@acme.example", user_agent="tests")
    clock.set(START + 3 * HOUR + 300)
    audit_trail.seal_all(runtime.services())

    report = _verify(client, _admin_token(flow, acme))

    assert {"period": "2027-01-15T09", "problem": "digest missing"} in report["broken_links"]
    assert report["valid"] is False
