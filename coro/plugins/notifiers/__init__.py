"""Notification channels: the `notifier` plugin kind (outgoing webhooks, Slack, e-mail)."""
