"""Alerts: the rule state machine, the notification stages, the outbox delivery and the notifiers."""
