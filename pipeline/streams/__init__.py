"""Redis Streams: broker, consumer-group loop, batching, dead letters, embedded Redis."""
