"""Development tools: line simulators (stepped, moving belt), synthetic tiles, line evaluation."""
