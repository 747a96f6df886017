"""`linewatch config example`: a complete, commented line.yaml written from the settings'
own classes (each key's comment is its field description), so it cannot go stale.

Every key is shown once, with its default (or the field's example where it has no
default); the example cameras show one `parts:` block per method, each with the keys
not shown before. The output loads back as a valid configuration."""

from __future__ import annotations

import textwrap
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from linewatch.pipeline.config import PARTS_CLASSES, Settings

WIDTH = 92  # comment lines wrap here
HEADER = """\
# line.yaml: `linewatch config example` writes this from the settings' own descriptions.
# Every key is optional except cameras; unknown keys are refused, naming the key.
# Nested keys can be set from the environment: LINEWATCH_INFERENCE__MAX_BATCH=16.

"""
CAMERAS = (
    {
        "id": "cam1",
        "url": "rtsp://user:secret@10.0.0.5/stream1",
        "fps": 5,
        "parts": {"method": "contrast"},
    },
    {"id": "cam2", "url": "rtsp://10.0.0.6/stream1", "parts": {"method": "background"}},
    {
        "id": "gate",
        "url": "rtsp://10.0.0.7/trigger",
        "parts": {"method": "fixed", "rois": [[0, 0, 320, 240], [320, 0, 640, 240]]},
    },
    {"id": "batch-42", "url": "/videos/batch-42.mp4", "parts": {"method": "none"}},
)  # one camera per parts method


def example_yaml() -> str:
    """The complete, commented line.yaml."""
    lines = _fields(Settings, {"cameras": CAMERAS}, 0, "", set())
    return HEADER + "\n".join(lines) + "\n"


def _fields(
    cls: type[BaseModel], given: Mapping[str, Any], indent: int, path: str, seen: set[str]
) -> list[str]:
    """The lines of `cls`'s keys: each one not shown before (or given), its description
    as a comment above it."""
    lines: list[str] = []
    pad = " " * indent
    for name, spec in cls.model_fields.items():
        key = f"{path}{name}"
        if key in seen and name not in given:
            continue
        if not indent and lines:
            lines.append("")  # a blank line between the top-level keys
        if key not in seen and spec.description:
            lines += _comment(spec.description, pad)
        seen.add(key)
        value = given[name] if name in given else _default(spec)
        lines += _field(name, spec, value, indent, key, seen)
    return lines


def _field(
    name: str, spec: FieldInfo, value: Any, indent: int, key: str, seen: set[str]
) -> list[str]:
    pad = " " * indent
    model = _model_of(spec.annotation)
    if name == "parts":
        method = (value or {}).get("method", "none") if isinstance(value, Mapping) else "none"
        model = PARTS_CLASSES[method]
    if model is not None and isinstance(value, Mapping | BaseModel):
        given = value if isinstance(value, Mapping) else {}
        return [f"{pad}{name}:", *_fields(model, given, indent + 2, f"{key}.", seen)]
    if model is not None and value is None:  # an optional section, off by default
        example = _fields(model, {}, indent + 2, f"{key}.", set())
        lines = [f"{pad}{name}: null", f"{pad}# {name}:"]
        return lines + [f"{pad}# {line[indent:]}" for line in example]
    item = _item_model(spec.annotation)
    if item is not None and value:
        lines = [f"{pad}{name}:"]
        for entry in value:
            lines += _entry(_fields(item, entry, indent + 4, f"{key}.", seen), indent + 2)
        return lines
    return [f"{pad}{name}: {_scalar(value)}"]


def _entry(lines: list[str], indent: int) -> list[str]:
    """A mapping's lines as a list entry: comments above its first key move out with the
    dash, the first key takes the dash."""
    first = next(i for i, line in enumerate(lines) if not line.lstrip().startswith("#"))
    pad = " " * indent
    head = [pad + line.lstrip() for line in lines[:first]]
    return [*head, f"{pad}- {lines[first].lstrip()}", *lines[first + 1 :]]


def _comment(text: str, pad: str) -> list[str]:
    text = " ".join(text.split())  # a class docstring's line breaks and indent
    return textwrap.wrap(
        text, WIDTH - len(pad), initial_indent=f"{pad}# ", subsequent_indent=f"{pad}# "
    )


def _default(spec: FieldInfo) -> Any:
    """The field's example when it has one (a value that reads well in a file), else its
    default."""
    if spec.examples:
        return spec.examples[0]
    return spec.get_default(call_default_factory=True)


def _scalar(value: Any) -> str:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_scalar(item) for item in value) + "]"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=1_000)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The settings class of a section (`X` or `X | None`), else None."""
    for candidate in _union_members(annotation):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _item_model(annotation: Any) -> type[BaseModel] | None:
    """The settings class of a list of sections (`tuple[X, ...]`), else None."""
    if typing.get_origin(annotation) is tuple:
        args = typing.get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis:
            return _model_of(args[0])
    return None


def _union_members(annotation: Any) -> tuple[Any, ...]:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return typing.get_args(annotation)
    return (annotation,)
