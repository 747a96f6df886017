"""HTTP API and dashboard (`linewatch serve`)."""
