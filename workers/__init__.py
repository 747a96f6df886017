"""Worker processes: ingest, inference, sink (`run(deps…)` + `main(settings)`); RQ jobs."""
