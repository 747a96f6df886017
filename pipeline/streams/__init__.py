"""Redis: broker (or Sentinel), consumer-group loop, batching, dead letters, live views."""
