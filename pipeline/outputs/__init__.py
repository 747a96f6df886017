"""Telling the line: outbox, notifiers (log, pub/sub, webhook), MQTT, camera status."""
