"""Signing keys across functions: rotation publishes before signing, and verifiers catch up."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mfa_core.adapters.keys import ARCHIVE_SECONDS, MAX_ARCHIVED_KEYS, REREAD_SECONDS, SigningKeys
from mfa_core.clock import ManualClock
from mfa_core.errors import ConfigurationError, InvalidToken
from mfa_core.tokens import ACCESS, TokenService


class FakeSecretsManager:
    shared: FakeSecretsManager

    def __init__(self) -> None:
        self.value = "{}"
        self.reads = 0

    def get_secret_value(self, SecretId: str) -> dict[str, Any]:
        self.reads += 1
        return {"SecretString": self.value}

    def put_secret_value(self, SecretId: str, SecretString: str) -> None:
        self.value = SecretString


class FakeSsm:
    def __init__(self, log: list[str]) -> None:
        self.value = '{"keys": []}'
        self.reads = 0
        self.log = log

    def get_parameter(self, Name: str) -> dict[str, Any]:
        self.reads += 1
        return {"Parameter": {"Value": self.value}}

    def put_parameter(self, Name: str, Value: str, Type: str, Overwrite: bool) -> None:
        self.log.append("ssm")
        self.value = Value


class OrderedSecrets(FakeSecretsManager):
    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log

    def put_secret_value(self, SecretId: str, SecretString: str) -> None:
        self.log.append("secret")
        super().put_secret_value(SecretId, SecretString)


def _keys(clock: ManualClock, secrets: FakeSecretsManager, ssm: FakeSsm) -> SigningKeys:
    return SigningKeys(
        secrets_client=lambda: secrets,
        ssm_client=lambda: ssm,
        secret_id="secret",
        parameter_name="jwks",
        cache_seconds=300,
        now=clock.now,
    )


def _tokens(keys: SigningKeys, clock: ManualClock) -> TokenService:
    return TokenService(keys=keys, clock=clock, issuer="https://issuer", audience="console")


@pytest.fixture
def setup() -> tuple[ManualClock, FakeSecretsManager, FakeSsm, list[str]]:
    log: list[str] = []
    return ManualClock(1_800_000_000), OrderedSecrets(log), FakeSsm(log), log


def test_rotation_publishes_public_key_first(setup: Any) -> None:
    clock, secrets, ssm, log = setup
    _keys(clock, secrets, ssm).rotate()
    assert log == ["ssm", "secret"]


def test_verifier_rereads_keys_for_new_kid(setup: Any) -> None:
    clock, secrets, ssm, _ = setup
    operator = _keys(clock, secrets, ssm)
    operator.rotate()
    signer_keys, verifier_keys = _keys(clock, secrets, ssm), _keys(clock, secrets, ssm)
    signer, verifier = _tokens(signer_keys, clock), _tokens(verifier_keys, clock)

    first = signer.issue(token_type=ACCESS, org_id="acme", user_id="u", lifetime=900)
    assert verifier.verify(first, accept=frozenset({ACCESS})).org_id == "acme"

    # A rotation that the signer has read (its cache expired) but the verifier's cache predates.
    clock.advance(REREAD_SECONDS)
    operator.rotate()
    signer_keys._private = None
    second = signer.issue(token_type=ACCESS, org_id="acme", user_id="u", lifetime=900)
    reads = ssm.reads
    assert verifier.verify(second, accept=frozenset({ACCESS})).org_id == "acme"
    assert ssm.reads == reads + 1


def test_unknown_kids_cannot_flood_ssm(setup: Any) -> None:
    clock, secrets, ssm, _ = setup
    operator = _keys(clock, secrets, ssm)
    operator.rotate()
    stranger_secrets, stranger_ssm = FakeSecretsManager(), FakeSsm([])
    stranger = _keys(clock, stranger_secrets, stranger_ssm)
    stranger.rotate()
    forged = _tokens(stranger, clock).issue(token_type=ACCESS, org_id="a", user_id="u", lifetime=60)

    verifier = _tokens(_keys(clock, secrets, ssm), clock)
    for _ in range(50):
        with pytest.raises(InvalidToken):
            verifier.verify(forged, accept=frozenset({ACCESS}))
    assert ssm.reads == 1


def _published_kids(ssm: FakeSsm) -> list[str]:
    return [key["kid"] for key in json.loads(ssm.value)["keys"]]


def test_rotations_keep_keys_for_a_day(setup: Any) -> None:
    clock, secrets, ssm, _ = setup
    keys = _keys(clock, secrets, ssm)
    first = keys.rotate()
    for _ in range(5):
        clock.advance(60)
        keys.rotate()
    assert first in _published_kids(ssm)
    assert len(_published_kids(ssm)) == 6

    clock.advance(24 * 60 * 60)
    latest = keys.rotate()
    kids = _published_kids(ssm)
    assert kids[0] == latest
    assert first not in kids
    assert len(kids) == 2  # the new key and the one before it


def test_rotation_keeps_new_key_when_clock_is_behind(setup: Any) -> None:
    clock, secrets, ssm, _ = setup
    keys = _keys(clock, secrets, ssm)
    keys.rotate()
    clock.advance(-3600)
    newest = keys.rotate()
    assert json.loads(secrets.value)["active_kid"] == newest
    assert newest in _published_kids(ssm)
    assert keys.private_keys().active_kid == newest


class ParameterStore:
    """SSM parameters by name, as put_parameter and get_parameter see them."""

    def __init__(self) -> None:
        self.values = {"jwks": '{"keys": []}', "archive": '{"keys": []}'}

    def get_parameter(self, Name: str) -> dict[str, Any]:
        return {"Parameter": {"Value": self.values[Name]}}

    def put_parameter(self, Name: str, Value: str, Type: str, Overwrite: bool, **_: Any) -> None:
        assert len(Value.encode()) <= 8192, "over the size of an advanced SSM parameter"
        self.values[Name] = Value

    def kids(self, name: str) -> list[str]:
        return [key["kid"] for key in json.loads(self.values[name])["keys"]]


def _archiving_keys(clock: ManualClock, ssm: ParameterStore) -> SigningKeys:
    return SigningKeys(
        secrets_client=lambda: FakeSecretsManager.shared,
        ssm_client=lambda: ssm,
        secret_id="secret",
        parameter_name="jwks",
        archive_parameter_name="archive",
        cache_seconds=300,
        now=clock.now,
    )


@pytest.fixture
def archiving() -> tuple[ManualClock, ParameterStore, SigningKeys]:
    clock, ssm = ManualClock(1_800_000_000), ParameterStore()
    FakeSecretsManager.shared = FakeSecretsManager()
    return clock, ssm, _archiving_keys(clock, ssm)


def test_archive_keeps_keys_that_left_the_jwks(archiving: Any) -> None:
    clock, ssm, keys = archiving
    first = keys.rotate()
    clock.advance(2 * 24 * 60 * 60)
    second = keys.rotate()
    clock.advance(2 * 24 * 60 * 60)
    third = keys.rotate()

    assert first not in ssm.kids("jwks")
    assert ssm.kids("archive") == [third, second, first]
    # Tokens are checked against the JWKS alone; only digests may use the archive.
    fresh = _archiving_keys(clock, ssm)
    assert fresh.public_key(first) is None
    archived = fresh.archived_key(first)
    assert archived is not None and "d" not in archived
    assert fresh.archived_key("made-up") is None


def test_archive_drops_keys_no_kept_digest_needs(archiving: Any) -> None:
    clock, ssm, keys = archiving
    first = keys.rotate()
    clock.advance(30 * 24 * 60 * 60)
    second = keys.rotate()
    # The first key signed digests until the second replaced it, and digests are kept for up
    # to ten years after that.
    clock.advance(ARCHIVE_SECONDS - 60)
    keys.rotate()
    assert first in ssm.kids("archive")
    clock.advance(120)
    latest = keys.rotate()
    assert ssm.kids("archive")[0] == latest
    assert first not in ssm.kids("archive")
    assert second in ssm.kids("archive")


def test_archive_fits_one_parameter(archiving: Any) -> None:
    clock, ssm, keys = archiving
    for _ in range(MAX_ARCHIVED_KEYS + 5):
        clock.advance(60)
        keys.rotate()
    assert len(ssm.kids("archive")) == MAX_ARCHIVED_KEYS


@pytest.mark.parametrize(
    ("field", "value"), [("kid", None), ("created_at", "soon"), ("keys", None)]
)
def test_rotation_keeps_a_malformed_archive(archiving: Any, field: str, value: Any) -> None:
    clock, ssm, keys = archiving
    for _ in range(2):
        keys.rotate()
        clock.advance(2 * 24 * 60 * 60)
    active = keys.rotate()
    # The oldest key left the secret, so only the archive still contains it.
    archive = json.loads(ssm.values["archive"])
    if field == "keys":
        del archive["keys"]
    elif value is None:
        del archive["keys"][2][field]
    else:
        archive["keys"][2][field] = value
    ssm.values["archive"] = json.dumps(archive)
    clock.advance(60)

    with pytest.raises(ConfigurationError, match="archive"):
        keys.rotate()

    # Nothing was replaced: the archived keys stay, and the active key still signs.
    assert ssm.values["archive"] == json.dumps(archive)
    assert keys.private_keys().active_kid == active
