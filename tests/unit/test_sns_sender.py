"""SMS through SNS: publishes to moto's server, and fails without logging the number or the code."""

from __future__ import annotations

import logging
import socket
import traceback
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError
from moto.core import DEFAULT_ACCOUNT_ID
from moto.server import ThreadedMotoServer
from moto.sns.models import sns_backends

from mfa_core.adapters.sns import SmsSender, SnsSmsSender
from mfa_core.errors import ConfigurationError, DependencyFailed

REGION = "us-east-1"
PHONE = "+447400123456"
MESSAGE = "Your Agent Console code is 482913"
CODE = "482913"


@pytest.fixture
def moto_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        # moto 5.2's stop() shuts the server down but leaves its listening socket open.
        if server._server is not None:
            server._server.server_close()


def sns_client(endpoint_url: str, **config: Any) -> Any:
    return boto3.client(
        "sns", region_name=REGION, endpoint_url=endpoint_url, config=Config(**config)
    )


class RecordingSns:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def publish(self, **kwargs: Any) -> dict[str, str]:
        self.calls.append(kwargs)
        return {"MessageId": "m-1"}


class FailingSns:
    """Fails the way SNS does for a bad number: the error's text repeats the number."""

    def publish(self, **kwargs: Any) -> dict[str, str]:
        raise ClientError(
            {
                "Error": {
                    "Code": "InvalidParameter",
                    "Message": f"Invalid parameter: PhoneNumber Reason: {kwargs['PhoneNumber']} "
                    f"rejected message {kwargs['Message']}",
                }
            },
            "Publish",
        )


def sender_records(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str | None]]:
    return [
        (record.levelno, getattr(record, "error_code", None))
        for record in caplog.records
        if record.name.endswith("mfa_core.adapters.sns")
    ]


def assert_nothing_secret_logged(caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    assert caplog.records
    for record in caplog.records:
        text = " ".join(str(value) for value in vars(record).values())
        for secret in secrets:
            assert secret not in text
    for secret in secrets:
        assert secret not in caplog.text


def test_sms_reaches_sns(moto_url: str) -> None:
    sender = SnsSmsSender(lambda: sns_client(moto_url), sender_id="AgentCon")

    message_id = sender.send(phone_number=PHONE, message=MESSAGE)

    sent = sns_backends[DEFAULT_ACCOUNT_ID][REGION].sms_messages
    assert sent[message_id] == (PHONE, MESSAGE)


def test_message_ids_differ(moto_url: str) -> None:
    sender = SnsSmsSender(lambda: sns_client(moto_url), sender_id=None)

    first = sender.send(phone_number=PHONE, message=MESSAGE)
    second = sender.send(phone_number=PHONE, message=MESSAGE)

    assert first != second


def test_sns_rejection_logs_only_code(moto_url: str, caplog: pytest.LogCaptureFixture) -> None:
    # moto, like SNS, rejects a number that is not E.164 with InvalidParameter.
    malformed = "+44 7400 123456"
    sender = SnsSmsSender(lambda: sns_client(moto_url), sender_id=None)

    with caplog.at_level(logging.INFO), pytest.raises(DependencyFailed):
        sender.send(phone_number=malformed, message=MESSAGE)

    assert sender_records(caplog) == [(logging.ERROR, "InvalidParameter")]
    assert_nothing_secret_logged(caplog, malformed, "7400 123456", MESSAGE, CODE)


def test_sns_error_not_chained(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sender = SnsSmsSender(FailingSns, sender_id=None)

    with caplog.at_level(logging.INFO), pytest.raises(DependencyFailed) as caught:
        sender.send(phone_number=PHONE, message=MESSAGE)

    error = caught.value
    assert error.detail == "Sending the SMS failed. Retry the request."
    assert error.__cause__ is None
    assert error.__context__ is None
    printed = "".join(traceback.format_exception(error))
    assert PHONE not in printed
    assert CODE not in printed
    assert_nothing_secret_logged(caplog, PHONE, "7400123456", MESSAGE, CODE)


def test_unreachable_endpoint_logs_error_class(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    client = sns_client(
        f"http://127.0.0.1:{closed_port}",
        connect_timeout=1,
        retries={"total_max_attempts": 1},
    )
    sender = SnsSmsSender(lambda: client, sender_id=None)

    with caplog.at_level(logging.INFO), pytest.raises(DependencyFailed):
        sender.send(phone_number=PHONE, message=MESSAGE)

    assert sender_records(caplog) == [(logging.ERROR, EndpointConnectionError.__name__)]
    assert_nothing_secret_logged(caplog, PHONE, "7400123456", MESSAGE, CODE)


def test_publish_sets_type_and_sender_id() -> None:
    sns = RecordingSns()

    message_id = SnsSmsSender(lambda: sns, sender_id="AgentCon").send(
        phone_number=PHONE, message=MESSAGE
    )

    assert message_id == "m-1"

    assert sns.calls == [
        {
            "PhoneNumber": PHONE,
            "Message": MESSAGE,
            "MessageAttributes": {
                "AWS.SNS.SMS.SMSType": {"DataType": "String", "StringValue": "Transactional"},
                "AWS.SNS.SMS.SenderID": {"DataType": "String", "StringValue": "AgentCon"},
            },
        }
    ]


def test_publish_without_sender_id() -> None:
    sns = RecordingSns()

    SnsSmsSender(lambda: sns, sender_id=None).send(phone_number=PHONE, message=MESSAGE)

    assert sns.calls[0]["MessageAttributes"] == {
        "AWS.SNS.SMS.SMSType": {"DataType": "String", "StringValue": "Transactional"}
    }


def test_client_built_on_send() -> None:
    built: list[RecordingSns] = []

    def factory() -> RecordingSns:
        built.append(RecordingSns())
        return built[-1]

    sender = SnsSmsSender(factory, sender_id=None)
    assert built == []

    sender.send(phone_number=PHONE, message=MESSAGE)
    assert len(built) == 1


def test_sns_sender_is_sms_sender() -> None:
    sender: SmsSender = SnsSmsSender(RecordingSns, sender_id=None)
    assert sender.send(phone_number=PHONE, message=MESSAGE) == "m-1"


@pytest.mark.parametrize("sender_id", ["MFA", "AgentCon", "Console2025", "2FA"])
def test_valid_sender_id_accepted(sender_id: str) -> None:
    SnsSmsSender(RecordingSns, sender_id=sender_id)


@pytest.mark.parametrize(
    "sender_id", ["", "AB", "123456", "Agent Con", "Agent-Con", "AgentConsole", "Äpfel"]
)
def test_invalid_sender_id_rejected(sender_id: str) -> None:
    with pytest.raises(ConfigurationError):
        SnsSmsSender(RecordingSns, sender_id=sender_id)
