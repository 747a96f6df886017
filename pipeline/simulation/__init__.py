"""Development tools: line simulator, synthetic tiles, line evaluation."""
