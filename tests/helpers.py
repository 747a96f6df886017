"""Helpers shared by tests."""

from __future__ import annotations

from pathlib import Path

from linewatch.pipeline.config import Settings, load_settings


def make_settings(tmp_path: Path, line: str, redis_url: str, **overrides: object) -> Settings:
    data = {"line": line, "redis_url": redis_url, "data_dir": str(tmp_path), **overrides}
    return load_settings(environ={}, overrides=data)
