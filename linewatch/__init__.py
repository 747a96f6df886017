"""The face: the `linewatch` CLI, `linewatch run` (the line), status, reports, demo."""
