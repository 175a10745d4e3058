"""Backup codes over HTTP: shown once at the first factor, single use, keyed digests only."""

from __future__ import annotations

import hashlib
import re
import threading
from typing import Any

import boto3
from jose import jwt

from local.stack import LocalStack
from mfa_core import backup_codes, runtime
from tests.api.harness import Client, Flow, Member, Reply
from tests.api.test_audit_and_logs import _contains, captured_logs
from tests.api.test_webauthn import audited
from tests.authenticator import SoftAuthenticator

CODE_FORMAT = re.compile(r"[0-9A-HJKMNP-TV-Z]{5}-[0-9A-HJKMNP-TV-Z]{5}\Z")


def first_factor_codes(flow: Flow, member: Member) -> tuple[str, list[str]]:
    """Enroll the member's first factor; return the access token and the codes shown once."""
    access = flow.login_ok(member, "authenticated")["access_token"]
    reply = flow.client.post("/v1/me/factors/totp", {"label": "Phone"}, token=access)
    member.totp_secret, member.factor_id = reply.body["secret"], reply.body["factor_id"]
    confirm = flow.client.post(
        f"/v1/me/factors/totp/{member.factor_id}/confirm",
        {"code": flow.code(member.totp_secret)},
        token=access,
    )
    assert confirm.status == 200, confirm.text
    codes: list[str] = confirm.body["backup_codes"]
    return access, codes


def use(flow: Flow, member: Member, code: str, token: str | None = None) -> Reply:
    return flow.client.post(
        "/v1/auth/mfa/verify", {"backup_code": code}, token=token or flow.mfa_token(member)
    )


def test_first_factor_shows_ten_codes_once(client: Client, flow: Flow, acme: Member) -> None:
    _, codes = first_factor_codes(flow, acme)
    assert len(codes) == 10
    assert len(set(codes)) == 10
    assert all(CODE_FORMAT.match(code) for code in codes)
    flow.next_step()
    fresh = flow.verify(acme, flow.mfa_token(acme)).body["access_token"]
    second = client.post("/v1/me/factors/totp", {}, token=fresh).body
    confirm = client.post(
        f"/v1/me/factors/totp/{second['factor_id']}/confirm",
        {"code": flow.code(second["secret"], steps_ahead=1)},
        token=fresh,
    )
    assert confirm.status == 200, confirm.text
    assert "backup_codes" not in confirm.body
    status = client.get("/v1/me/backup-codes", token=fresh).body
    assert (status["remaining"], status["total"]) == (10, 10)


def test_first_security_key_also_brings_codes(client: Client, flow: Flow, acme: Member) -> None:
    access = flow.login_ok(acme, "authenticated")["access_token"]
    options = client.post("/v1/me/factors/webauthn/options", {}, token=access).body
    reply = client.post(
        "/v1/me/factors/webauthn",
        {
            "challenge_id": options["challenge_id"],
            "credential": SoftAuthenticator().register(options["options"], origin=flow.origin),
        },
        token=access,
    )
    assert reply.status == 201, reply.text
    assert len(reply.body["backup_codes"]) == 10


def test_code_signs_in_once_and_is_audited(
    client: Client, flow: Flow, acme: Member, stack: LocalStack
) -> None:
    _, codes = first_factor_codes(flow, acme)
    reply = use(flow, acme, codes[0])
    assert reply.status == 200, reply.text
    assert reply.body["status"] == "authenticated"
    assert reply.body["backup_codes_remaining"] == 9
    assert "warning" not in reply.body
    claims = jwt.get_unverified_claims(reply.body["access_token"])
    assert (claims["acr"], claims["amr"]) == ("aal2", ["pwd", "mfa"])

    again = use(flow, acme, codes[0])
    assert again.status == 401
    assert again.body["code"] == "invalid_code"
    outcomes = audited(stack, "acme", "login.mfa")
    assert ("success", None) in outcomes
    assert ("denied", "backup_code_used") in outcomes
    status = client.get("/v1/me/backup-codes", token=reply.body["access_token"]).body
    assert status["remaining"] == 9


def test_code_accepted_in_any_case_without_hyphen(flow: Flow, acme: Member) -> None:
    _, codes = first_factor_codes(flow, acme)
    assert use(flow, acme, codes[1].replace("-", "").lower()).status == 200
    assert use(flow, acme, f"  {codes[2].lower()} ").status == 200


def test_warning_once_three_or_fewer_remain(flow: Flow, acme: Member) -> None:
    _, codes = first_factor_codes(flow, acme)
    for code in codes[:6]:
        assert "warning" not in use(flow, acme, code).body
    low = use(flow, acme, codes[6]).body
    assert low["backup_codes_remaining"] == 3
    assert "generate a new set" in low["warning"]


def test_fifty_concurrent_uses_let_exactly_one_through(flow: Flow, acme: Member) -> None:
    _, codes = first_factor_codes(flow, acme)
    tokens = [flow.mfa_token(acme) for _ in range(50)]
    barrier = threading.Barrier(50)
    statuses: list[int] = []

    def attempt(token: str) -> None:
        barrier.wait()
        statuses.append(use(flow, acme, codes[0], token).status)

    threads = [threading.Thread(target=attempt, args=(token,)) for token in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses.count(200) == 1
    assert statuses.count(401) == 49


def test_regeneration_voids_old_set(
    client: Client, flow: Flow, acme: Member, stack: LocalStack
) -> None:
    access, old = first_factor_codes(flow, acme)
    flow.clock.advance(301)
    refused = client.post("/v1/me/backup-codes", {}, token=access)
    assert refused.status == 403
    assert refused.body["code"] == "step_up_required"

    fresh = use(flow, acme, old[0], token=access).body["access_token"]
    regenerated = client.post("/v1/me/backup-codes", {}, token=fresh)
    assert regenerated.status == 201, regenerated.text
    new = regenerated.body["backup_codes"]
    assert len(new) == 10
    assert not set(new) & set(old)
    assert use(flow, acme, old[1]).status == 401
    assert use(flow, acme, new[0]).status == 200
    assert ("success", None) in audited(stack, "acme", "backup_codes.regenerate")


def test_wrong_codes_count_towards_lockout(flow: Flow, acme: Member) -> None:
    first_factor_codes(flow, acme)
    mfa_token = flow.mfa_token(acme)
    statuses = [use(flow, acme, "ZZZZZ-ZZZZZ", mfa_token).status for _ in range(10)]
    assert statuses[:9] == [401] * 9
    assert statuses[9] == 429


def test_codes_stored_as_keyed_digests_and_never_logged(
    flow: Flow, acme: Member, stack: LocalStack
) -> None:
    with captured_logs() as stream:
        _, codes = first_factor_codes(flow, acme)
        assert use(flow, acme, codes[0]).status == 200
        assert use(flow, acme, codes[0]).status == 401
    logs = stream.getvalue()
    dynamodb = boto3.client("dynamodb", endpoint_url=stack.aws_endpoint_url)
    dump = " ".join(str(dynamodb.scan(TableName=t)["Items"]) for t in stack.table_names.values())
    for code in codes:
        for form in (code, code.replace("-", "")):
            assert not _contains(logs, form)
            assert not _contains(dump, form)
    pepper = runtime.services().pepper
    store = runtime.services().store
    item = store.get_factor("acme", acme.user_id, backup_codes.FACTOR_ID)
    assert item is not None
    stored = set(item.code_digests())
    plain = backup_codes.normalize(codes[1])
    assert plain is not None
    assert backup_codes.digest(pepper, plain) in stored
    assert hashlib.sha256(plain.encode()).hexdigest() not in stored


def test_code_serves_a_step_up(client: Client, flow: Flow, acme: Member) -> None:
    access, codes = first_factor_codes(flow, acme)
    flow.clock.advance(600)
    reply = use(flow, acme, codes[0], token=access)
    assert reply.status == 200, reply.text
    assert reply.body["status"] == "verified"
    claims: dict[str, Any] = jwt.get_unverified_claims(reply.body["access_token"])
    assert claims["mfa_time"] == int(flow.clock.now())


def test_backup_codes_not_listed_or_removable(client: Client, flow: Flow, acme: Member) -> None:
    first_factor_codes(flow, acme)
    flow.next_step()
    access = flow.verify(acme, flow.mfa_token(acme)).body["access_token"]
    listed = client.get("/v1/me/factors", token=access).body["factors"]
    assert [f["type"] for f in listed] == ["totp"]
    removal = client.delete(f"/v1/me/factors/{backup_codes.FACTOR_ID}", token=access)
    assert removal.status == 404


def test_missing_set_looks_like_wrong_code(flow: Flow, acme: Member, stack: LocalStack) -> None:
    first_factor_codes(flow, acme)
    store = runtime.services().store
    item = store.get_factor("acme", acme.user_id, backup_codes.FACTOR_ID)
    assert item is not None
    item.delete()
    reply = use(flow, acme, "ABCDE-FGH23")
    assert reply.status == 401
    assert reply.body["code"] == "invalid_code"
    assert ("failure", "backup_codes_missing") in audited(stack, "acme", "login.mfa")
