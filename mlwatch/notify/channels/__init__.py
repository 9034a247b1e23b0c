"""Notification channels, one class per module behind :class:`mlwatch.notify.outbox.Channel`."""

from __future__ import annotations

from collections.abc import Mapping

from mlwatch.config.alerting import (
    AppriseNotifierConfig,
    EmailNotifierConfig,
    ExecNotifierConfig,
    NotifierConfig,
    WebhookNotifierConfig,
)
from mlwatch.notify.outbox import Channel


def make_channel(cfg: NotifierConfig, env: Mapping[str, str] | None = None) -> Channel:
    """The channel for a notifier's config."""
    if isinstance(cfg, EmailNotifierConfig):
        from mlwatch.notify.channels.email import EmailNotifier

        return EmailNotifier(cfg, env)
    if isinstance(cfg, WebhookNotifierConfig):
        from mlwatch.notify.channels.webhook import WebhookNotifier

        return WebhookNotifier(cfg, env)
    if isinstance(cfg, AppriseNotifierConfig):
        from mlwatch.notify.channels.apprise import AppriseNotifier

        return AppriseNotifier(cfg)
    if isinstance(cfg, ExecNotifierConfig):
        from mlwatch.notify.channels.exec import ExecNotifier

        return ExecNotifier(cfg)
    raise ValueError(f"unknown notifier type {cfg.type!r}")
