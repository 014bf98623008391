"""Settings: defaults, and the relations between timeouts checked at start."""

from __future__ import annotations

import pytest

from chat_common.settings import SettingsError, load
from outbox_relay.settings import SHUTDOWN_MARGIN_SECONDS, Settings


def test_the_defaults_are_consistent() -> None:
    settings = load(Settings, environ={})
    assert settings.publish_timeout_seconds < settings.lease_seconds
    assert (
        settings.shutdown_grace_seconds > settings.publish_timeout_seconds + SHUTDOWN_MARGIN_SECONDS
    )


def test_the_grace_must_leave_a_margin_after_a_whole_publish_round() -> None:
    Settings(publish_timeout_seconds=5.0, shutdown_grace_seconds=7.5)
    with pytest.raises(ValueError, match=r"shutdown_grace_seconds \(7\) must be more than"):
        Settings(publish_timeout_seconds=5.0, shutdown_grace_seconds=7.0)
    with pytest.raises(ValueError, match="SHUTDOWN_GRACE_SECONDS"):
        Settings(publish_timeout_seconds=10.0, shutdown_grace_seconds=10.0)


def test_a_grace_too_short_fails_at_start_naming_both_variables() -> None:
    with pytest.raises(SettingsError) as refused:
        load(Settings, environ={"PUBLISH_TIMEOUT_SECONDS": "9", "SHUTDOWN_GRACE_SECONDS": "10"})
    message = str(refused.value)
    assert "SHUTDOWN_GRACE_SECONDS" in message
    assert "PUBLISH_TIMEOUT_SECONDS" in message


def test_the_publish_timeout_must_stay_below_the_lease() -> None:
    with pytest.raises(ValueError, match="shorter than lease_seconds"):
        Settings(lease_seconds=4.0, publish_timeout_seconds=4.0, shutdown_grace_seconds=10.0)


def test_round_pacing_from_the_environment_and_its_checks() -> None:
    settings = load(
        Settings,
        environ={
            "ROUND_INTERVAL_SECONDS": "0.01",
            "ROUND_TARGET_ROWS": "8",
            "ROUND_BUSY_RATE": "50",
        },
    )
    policy = settings.pacing()
    assert (policy.max_window, policy.target_batch, policy.busy_rate) == (0.01, 8, 50.0)
    with pytest.raises(SettingsError, match="target_batch"):
        load(Settings, environ={"ROUND_TARGET_ROWS": "0"})
