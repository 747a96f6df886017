"""The dead-letter stream: entries that could not be processed, with the reason."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from linewatch.pipeline.streams import broker


@dataclass(frozen=True)
class DeadLetter:
    id: str
    source: str
    entry_id: str
    reason: str
    fields: dict[bytes, bytes]


def list_dead(client: broker.Client, stream: str, limit: int = 100) -> list[DeadLetter]:
    return [_parse(entry_id, fields) for entry_id, fields in client.xrange(stream, count=limit)]


def replay(client: broker.Client, stream: str, ids: Sequence[str] = ()) -> int:
    """Put dead entries back on their source stream (all, or `ids`); returns how many."""
    letters = [d for d in list_dead(client, stream, limit=100_000) if not ids or d.id in ids]
    for letter in letters:
        pipe = broker.transaction(client)
        broker.add_to(pipe, letter.source, [letter.fields])
        pipe.xdel(stream, letter.id)
        pipe.execute()
    return len(letters)


def purge(client: broker.Client, stream: str, ids: Sequence[str] = ()) -> int:
    if ids:
        return int(client.xdel(stream, *ids))
    count = broker.backlog(client, stream)
    client.delete(stream)
    return count


def _parse(entry_id: bytes, fields: dict[bytes, bytes]) -> DeadLetter:
    original = {
        k[len(broker.DEAD_FIELD_PREFIX) :]: v
        for k, v in fields.items()
        if k.startswith(broker.DEAD_FIELD_PREFIX)
    }
    return DeadLetter(
        id=entry_id.decode(),
        source=fields.get(b"source", b"").decode(errors="replace"),
        entry_id=fields.get(b"entry_id", b"").decode(errors="replace"),
        reason=fields.get(b"reason", b"").decode(errors="replace"),
        fields=original,
    )
