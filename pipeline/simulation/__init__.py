"""Development tools: line simulators, synthetic tiles, line and locate evaluation."""
