"""Metrics never break a response."""

from __future__ import annotations

import pytest

from mfa_core import telemetry


def test_flush_failure_is_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without a namespace, Powertools refuses to publish: the case of a module imported before
    # the environment was set.
    monkeypatch.setattr(telemetry.metrics, "namespace", None)
    telemetry.count(telemetry.MFA_FAILED)
    telemetry.flush()
    assert not telemetry.metrics.metric_set


def test_flush_prints_counted_metrics(capsys: pytest.CaptureFixture[str]) -> None:
    telemetry.count(telemetry.LOGIN_FAILED)
    telemetry.flush()
    assert '"LoginFailed"' in capsys.readouterr().out
    assert not telemetry.metrics.metric_set
