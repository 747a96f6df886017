"""From results to the line: alert rules, reorder buffer, notifiers, webhook (HTTP + HMAC)."""
