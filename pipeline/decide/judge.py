"""Deciding parts: from stored part ends and views to part rows, part alerts, line alarms.

Each round reads the pending part ends (with how many of their views are stored) and
acts on those that are due, all in one transaction:

- complete (views stored == views sent, any status) before its deadline: the verdict
  is written and announced;
- complete only after its deadline (a slow or restarted sink): the verdict is written
  with `late` and the part is announced as `uninspected` (what the line did at the
  deadline);
- its deadline passed with views missing: a row `uninspected` (`late` false) is written
  and announced, and the part end stays, waiting for late views;
- such a part whose views then all arrive: its row gets the verdict they give, `late`
  true, and nothing is announced again; `verdict.late_window_s` after the deadline the
  part end is dropped and the row stays `uninspected`.

Every NG part (defect, or uninspected with `on_uninspected: reject`) gets one part alert
in the same transaction as its row; the part's verdict and alert go to the outbox in that
transaction. The line alarm is fed the round's parts after that commit, and the alarm
events it opens or closes are stored with their outbox entries in a second transaction:
a sink killed between the two loses no part, and on restart the alarm's window is
rebuilt from the stored parts (an alarm that round would have opened opens with the next
part while the rate still holds). The sink delivers the outbox to the notifiers after
each commit (pipeline/outputs/outbox.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from linewatch.pipeline.config import LineAlarmSettings, VerdictSettings
from linewatch.pipeline.decide import ng_rule
from linewatch.pipeline.decide.line_alarm import LineAlarm
from linewatch.pipeline.decide.verdict import ModelCatalog, Verdict, decide
from linewatch.pipeline.storage import outbox
from linewatch.pipeline.storage import parts as store
from linewatch.pipeline.storage.outbox import ALERT, VERDICT
from linewatch.schemas.decisions import (
    LINE_LABEL,
    UNINSPECTED_LABEL,
    LineEvent,
    PartOutcome,
    PendingPart,
)
from linewatch.schemas.messages import AlertMessage, PartVerdict

FINAL, DEADLINE, LATE, EXPIRE = "final", "deadline", "late", "expire"


@dataclass(frozen=True)
class Decided:
    """One part acted on in a round; `announce` is None for a late verdict."""

    pending: PendingPart
    action: str
    verdict: Verdict
    announce: PartVerdict | None
    alert: AlertMessage | None = None


@dataclass
class Round:
    decided: list[Decided] = field(default_factory=list)
    line_alerts: list[AlertMessage] = field(default_factory=list)

    @property
    def verdicts(self) -> list[PartVerdict]:
        return [d.announce for d in self.decided if d.announce is not None]

    @property
    def alerts(self) -> list[AlertMessage]:
        return [d.alert for d in self.decided if d.alert is not None] + self.line_alerts


class PartJudge:
    """Decides due parts from what is stored; holds no state a restart would lose
    except the line alarm's window, which it rebuilds from the stored parts."""

    def __init__(
        self,
        *,
        engine: Engine,
        models: ModelCatalog,
        verdict: VerdictSettings,
        line: LineAlarmSettings,
    ) -> None:
        self.engine = engine
        self.models = models
        self.settings = verdict
        self.line = LineAlarm(line)
        self._held: list[PartOutcome] = []  # decided, waiting for an earlier part's verdict
        self.line.resume(
            store.recent_outcomes(engine, line.n, self._line_saw_ng), store.open_line_events(engine)
        )

    def decide_due(self, now: int) -> Round:
        """One round: act on every due part end in one transaction, then the line alarm."""
        pending = store.pending_parts(self.engine)
        due = [(p, a) for p in pending if (a := self.action(p, now))]
        if not due:
            return Round()
        with Session(self.engine) as session, session.begin():
            decided = [self._apply(session, p, action, now) for p, action in due]
        done = Round([d for d in decided if d is not None])
        acted = {p.key for p, _ in due}
        waiting = [p for p in pending if not p.announced and p.key not in acted]
        done.line_alerts = self._line_alarm(done.decided, waiting, now)
        return done

    def action(self, pending: PendingPart, now: int) -> str | None:
        late_end = pending.deadline_ts + int(self.settings.late_window_s * 1e9)
        if pending.announced:
            if pending.complete:
                return LATE
            return EXPIRE if now >= late_end else None
        if pending.complete:
            return FINAL
        return DEADLINE if now >= pending.deadline_ts else None

    def _apply(
        self, session: Session, pending: PendingPart, action: str, now: int
    ) -> Decided | None:
        if not store.claim(session, pending, final=action != DEADLINE):
            return None  # another sink took it
        end = pending.end
        views = store.part_views(session, end.camera_id, end.part_id)  # with their crops
        if action != DEADLINE:  # final: the part row keeps the one crop it needs
            store.drop_evidence(session, end.camera_id, end.part_id)
        if action == EXPIRE:
            return None
        verdict = decide(views, self.models.for_views(views), self.settings)
        late = action == LATE or (action == FINAL and now > pending.deadline_ts)
        row = self._row(pending, verdict, now, late)
        if action == LATE:
            store.update_late(session, end.camera_id, end.part_id, row)
            return Decided(pending, action, verdict, None)
        if action == DEADLINE:
            row.update(verdict="uninspected", label=UNINSPECTED_LABEL)
        if store.insert_part(session, self.engine, row) is None:
            return None  # decided before (a replayed part end)
        announce = self._announcement(pending, row, now, sent_uninspected=late)
        alert = self._part_alert(session, pending, announce, verdict, now)
        outbox.add(session, VERDICT, announce.to_json(), now)
        if alert is not None:
            outbox.add(session, ALERT, alert.to_json(), now)
        return Decided(pending, action, verdict, announce, alert)

    def _row(self, pending: PendingPart, verdict: Verdict, now: int, late: bool) -> dict[str, Any]:
        end, best = pending.end, verdict.best
        box = best.box if best and best.box else (None, None, None, None)
        span = {k: v for k, v in asdict(end).items() if k not in ("ended_ts", "reason")}
        return {
            **span,  # camera, part, views sent, first/last seq, pts and capture time
            "captured_at": store.captured_at(end.first_capture_ts),
            "views_inferred": verdict.views_inferred,
            "verdict": verdict.verdict,
            "label": verdict.label,
            "score": verdict.score,
            "class_scores": store.class_scores_json(verdict.class_scores),
            "model_version": verdict.model_version,
            "end_reason": end.reason,
            "decided_ts": now,
            "deadline_ts": pending.deadline_ts,
            "late": late,
            "best_pts": best.pts if best else None,
            "x1": box[0],
            "y1": box[1],
            "x2": box[2],
            "y2": box[3],
            "evidence": best.evidence if best else None,
            "novelty": verdict.novelty,
            "gallery_label": verdict.gallery_label,
        }

    def _announcement(
        self,
        pending: PendingPart,
        row: dict[str, Any],
        now: int,
        sent_uninspected: bool,
    ) -> PartVerdict:
        uninspected = ng_rule.sent_uninspected(str(row["verdict"]), sent_uninspected)
        return PartVerdict(
            camera_id=pending.end.camera_id,
            part_id=pending.end.part_id,
            verdict="uninspected" if uninspected else str(row["verdict"]),
            label=UNINSPECTED_LABEL if uninspected else str(row["label"]),
            score=float(row["score"]),
            model_version=str(row["model_version"]),
            first_capture_ts=pending.end.first_capture_ts,
            last_capture_ts=pending.end.last_capture_ts,
            decided_ts=now,
            deadline_ts=pending.deadline_ts,
            views_sent=pending.end.views_sent,
            views_inferred=int(row["views_inferred"]),
            novelty=row["novelty"],
            gallery_label=row["gallery_label"],
        )

    def _line_saw_ng(self, verdict: str, late: bool) -> bool:
        return ng_rule.is_ng(verdict, late, self.settings.rejects_uninspected)

    def _part_alert(
        self,
        session: Session,
        pending: PendingPart,
        announced: PartVerdict,
        verdict: Verdict,
        now: int,
    ) -> AlertMessage | None:
        if not self._line_saw_ng(announced.verdict, False):
            return None
        end = pending.end
        values: dict[str, Any] = {
            "camera_id": end.camera_id,
            "kind": "part",
            "part_id": end.part_id,
            "label": announced.label,
            "state": "raised",
            "opened_seq": end.first_seq,
            "opened_ts": end.first_capture_ts,
            "raised_ts": now,
            "closed_seq": end.last_seq,
            "closed_ts": end.last_capture_ts,
            "peak_score": announced.score,
            "frames": announced.views_inferred,
            "evidence": verdict.best.evidence if verdict.best else None,
        }
        alert_id = store.insert_part_alert(session, self.engine, values)
        if alert_id is None:
            return None
        values.pop("evidence")
        values.pop("raised_ts")
        return AlertMessage(
            alert_id=int(alert_id),
            **values,
            novelty=announced.novelty,
            gallery_label=announced.gallery_label,
        )

    def _in_part_order(
        self, decided: Sequence[Decided], waiting: Sequence[PendingPart]
    ) -> list[PartOutcome]:
        """The announced parts the line alarm may count now, in part order per camera: a
        part decided before an earlier part of its camera (parallel inference workers
        finish out of order) is held until that part is announced too."""
        for item in decided:
            if item.announce is not None:
                end = item.pending.end
                ng = self._line_saw_ng(item.announce.verdict, False)
                outcome = (end.first_seq, end.last_seq, end.last_capture_ts, ng)
                self._held.append(PartOutcome(end.camera_id, end.part_id, *outcome))
        first_waiting: dict[str, int] = {}
        for part in waiting:
            camera, part_id = part.key
            first_waiting[camera] = min(part_id, first_waiting.get(camera, part_id))
        ready, held = [], []
        for outcome in sorted(self._held, key=lambda o: (o.camera_id, o.part_id)):
            early = outcome.part_id < first_waiting.get(outcome.camera_id, outcome.part_id + 1)
            (ready if early else held).append(outcome)
        self._held = held
        return ready

    def _line_alarm(
        self, decided: Sequence[Decided], waiting: Sequence[PendingPart], now: int
    ) -> list[AlertMessage]:
        events: list[LineEvent] = []
        for outcome in self._in_part_order(decided, waiting):
            event = self.line.feed(outcome)
            if event is not None:
                events.append(event)
        if not events:
            return []
        with Session(self.engine) as session, session.begin():
            ids = [store.store_line_event(session, self.engine, e, now) for e in events]
            messages = [_line_message(i, event) for i, event in zip(ids, events, strict=True)]
            for message in messages:
                outbox.add(session, ALERT, message.to_json(), now)
        return messages


def _line_message(alert_id: int, event: LineEvent) -> AlertMessage:
    return AlertMessage(
        alert_id=alert_id,
        camera_id=event.camera_id,
        label=LINE_LABEL,
        state=event.state,
        opened_seq=event.opened_seq,
        opened_ts=event.opened_ts,
        closed_seq=event.closed_seq,
        closed_ts=event.closed_ts,
        peak_score=event.rate,
        frames=event.ng_parts,
        kind="line",
    )
