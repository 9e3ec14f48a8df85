"""Stage 4: projection. Each element is closed into its span and items (with the provenance of
its dates), the next one found on the compiled transition table (a decision whose guard is
unknown projects every branch), count gates and ``requires`` rules applied; overdue items and
the infant-dose warning are :mod:`.marks`."""

from __future__ import annotations

import datetime as dt
from typing import Any

from .._machine import Edge
from .._rules import depends_on, explain

from .common import _count_text, _narrow, _Open, _recovered
from .records import Decision, ElementSpan

#: The status of a closed element's items: those of a completed one count as done.
_ITEM_STATUS = {"completed": "done", "pending_decision": "pending_decision"}


class _Projection:
    """Projection of what has not happened yet: element spans, count gates, eligibility, decisions and
    their branches."""

    def project(self, cur: _Open, facts: dict[str, Any], branch: str | None, depth: int = 0,
                domains: dict[str, frozenset[str]] | None = None) -> None:
        """Project the rest of the plan from ``cur``.

        ``domains``: the arms still possible for each randomisation not yet recorded. A pending
        branch narrows them (the branch "randomisation→arm b" assumes arm b), so a later
        decision on the same randomisation follows that assumption instead of projecting
        impossible combinations (AALL1731's two non-sequential blinatumomab cycles).
        """
        p = self.p
        pending = branch is not None
        if domains is None:
            domains = {f"arm:{r}": frozenset(arms) for r, arms in p.randomisations.items() if f"arm:{r}" not in facts}
        while True:
            el = p.elements[cur.id]
            if cur.actual_start is None and el.requires:
                failed, waiting = self.unmet(cur.id, facts)
                if failed:
                    self.warnings.append(f"{cur.id} is not planned: {'; '.join(failed)}. The definition plans no "
                                         f"other path for this patient: record what was done instead "
                                         f"(off_protocol with the reason)")
                    return
                if waiting:
                    self.warnings.append(f"{cur.id} is planned, but whether the patient may have it is not "
                                         f"recorded yet: waiting for {', '.join(waiting)}")
            if pending:
                status = "pending_decision"
            elif cur.actual_end is not None:
                status = "completed"
            elif cur.actual_start is not None:
                status = "in_progress"
            else:
                status = "planned"
            end = self.close(cur, status, branch, stop=cur.actual_end)
            reason = self.end_reason
            if el.final:
                return
            edges = p.table[cur.id]
            chosen: list[tuple[Edge, bool | None]] = []
            unknown = False
            for e in edges:
                r = True if e.guard is None else e.guard(facts)
                if r is True:
                    chosen.append((e, True))
                    break
                if r is None:
                    chosen.append((e, None))
                    unknown = True
            narrowed: dict[int, dict[str, frozenset[str]]] = {}
            if unknown and domains:
                chosen, narrowed = _narrow(edges, chosen, facts, domains)
                unknown = len(chosen) > 1 or (bool(chosen) and chosen[0][1] is None)
            if end is None:  # pragma: no cover - only final elements lack an end
                return
            when = end + 1
            if not chosen:
                self.decide(edges, None, "no_rule_applies", dt.date.fromordinal(when), facts, branch)
                self.warnings.append(f"no transition out of {cur.id} applies to this patient; the plan stops there")
                return
            if not unknown:
                edge = chosen[0][0]
                if len(edges) > 1 or edge.guard is not None:
                    self.decide(edges, edge, "decided", dt.date.fromordinal(when), facts, branch)
                domains = narrowed.get(id(edge), domains)
                cur = self.gated(edge.dest, end)
                cur.dated = cur.dated or reason
                continue
            self.decide(edges, None, "pending", dt.date.fromordinal(when), facts, branch)
            if depth >= 8:  # pragma: no cover - a protocol with more than 8 nested pending decisions
                self.warnings.append("more than 8 nested pending decisions: projection stops")
                return
            # An end of therapy anchored to an element's start belongs to each branch.
            saved, seen = self.eot, []
            for edge, _ in chosen:
                label = f"{edge.decision}→{edge.dest}"
                self.eot = saved
                nxt = self.gated(edge.dest, end)
                nxt.dated = nxt.dated or reason
                self.project(nxt, facts,
                             label if branch is None else f"{branch} / {label}", depth + 1,
                             narrowed.get(id(edge), domains))
                seen.append(self.eot)
            # The plan's end of therapy is the branches' one when they agree (a branch that
            # never reaches the anchor, e.g. HSCT, has none); else it stays unknown.
            ends = {x for x in seen if x is not None}
            self.eot = ends.pop() if len(ends) == 1 else saved
            return

    def close(self, cur: _Open, status: str, branch: str | None = None, stop: int | None = None) -> int | None:
        """Record the span of ``cur`` and emit its items up to ordinal ``stop`` (inclusive).

        Returns the element's last day: the recorded end, else the planned end moved by the
        recorded holds, interruptions and delays (None for a final element without length).
        """
        el = self.p.elements[cur.id]
        start = cur.actual_start if cur.actual_start is not None else cur.planned_start
        if el.id == self.p.eot_anchor_element and self.eot is None and self.p.eot_days is not None:
            self.eot = self.eot_from(start)
        length = self.length_of(el, start)
        # Provenance of the dates (issue 11): a projected start follows the earlier elements'
        # lengths; a placeholder among them makes this element's dates unverified too.
        dated = None if cur.actual_start is not None else cur.dated
        gap = el.model.start.gap_days if el.model.start is not None else None
        if cur.actual_start is None and gap is not None and gap.evidence == "placeholder" and dated is None:
            dated = f"follows the placeholder gap before {el.id}"
        own = None
        if cur.actual_end is None and el.evidence == "placeholder" and not el.open_ended and length:
            own = f"follows the placeholder length of {el.id} ({length} days)"
        self.dating = dated
        self.end_reason = None if cur.actual_end is not None else (dated or own)
        # Items of a completed element count as done; a stopped element's later items are dropped.
        item_status = _ITEM_STATUS.get(status, "planned")
        reasons: tuple[str, ...] = ()
        if dated:
            reasons = (f"its start date {dated}", f"its end date {dated}")
        elif own:
            reasons = (f"its end date {own}",)
        span = ElementSpan(el.id, el.title, dt.date.fromordinal(cur.planned_start), None,
                           None if cur.actual_start is None else dt.date.fromordinal(cur.actual_start),
                           None if cur.actual_end is None else dt.date.fromordinal(cur.actual_end), status, branch,
                           el.evidence, cur.note, reasons)
        self.elements.append(span)
        if length is None:
            return cur.actual_end
        end = start + length - 1
        events = self.by_element.get(el.id)
        bag = self.bag_hours.get(el.id)
        rows = self.rows
        rebag = bag is not None and el.infusion is not None and bag[1] != el.infusion.default_hours
        mark = len(rows)
        # Under way: past items are marked as they are emitted (the reference marks them after).
        today = self.as_of_ord if status == "in_progress" and not self.reference else None
        fast = bool(events) and not self.reference and not rebag and cur.actual_start is not None \
            and el.id not in self.mixed
        # A worklist projection (plan_rows_before) lists no row dated from rows_before on: an
        # element's rows are made independently of each other, and nothing else of the plan is
        # read from them (its end comes from its length, its overdue items are past ones).
        cut = None if self.rows_before is None else self.rows_before - 1
        if fast:
            # Only doses given: each event finds its row by reference, rows emitted as given (an
            # event naming a row past the cut sends the element to the general path below).
            prepared = self.prepare_given(el, start, length, events)  # type: ignore[arg-type]
            fast = False
            if prepared is not None:
                flagged = len(self.ctx.flags)
                self.ctx.emit(el, start, length, cut, item_status, branch, rows, dated, today, prepared[1])
                fast = self.finish_given(rows, mark, start, events, prepared)  # type: ignore[arg-type]
                if not fast:  # the general path emits the rows, and flags the weight changes, again
                    del rows[mark:]
                    del self.ctx.flags[flagged:]
            if fast and stop is not None and len(rows) > mark and rows[-1][0] > stop:
                kept = [r for r in rows[mark:] if r[0] <= stop or r[5] in ("given", "omitted")]
                rows[mark:] = kept
                if kept and kept[-1][0] > stop:  # a dose recorded after the element ended
                    self.adjusted = True
        if fast:
            pass
        elif events or rebag:
            tmp, end, notes = self.adjust(el, start, length, item_status, branch, events or [], bag,
                                          cur.actual_start is not None, cur.actual_end)
            if stop is not None:  # what was recorded stays, even when dated after the element ended
                tmp = [r for r in tmp if r[0] <= stop or r[5] in ("given", "omitted")]
            if notes:
                span.note = "; ".join(filter(None, [span.note, *notes]))
            rows.extend(map(tuple, tmp))
            self.adjusted = True
        elif cut is None:
            self.ctx.emit(el, start, length, stop, item_status, branch, rows, dated, today)
        elif item_status == "done":
            # The items of a completed element, nothing recorded, are all done: none is listed.
            self.ctx.flag_only(el, start, length, stop)
        else:
            self.ctx.emit(el, start, length, cut if stop is None else min(stop, cut), item_status, branch, rows,
                          dated, today)
            if len(rows) == mark:  # no row before the cut: emit flagged no weight change either
                self.ctx.flag_only(el, start, length, stop)
        if not el.open_ended:
            span.planned_end = dt.date.fromordinal(end)
        elif self.eot is not None:
            span.planned_end = dt.date.fromordinal(self.eot)
        if status == "in_progress":
            if today is not None and (fast or not (events or rebag)):
                self.overdue(el, length, rows, mark)
            else:
                self.mark_overdue(rows, mark)
        return cur.actual_end if cur.actual_end is not None else end

    def length_of(self, el: Any, start: int) -> int | None:
        if el.open_ended:
            if self.eot is None:
                return None
            length = self.eot - start + 1
            if length <= 0:
                self.warnings.append(f"{el.id} would start on {dt.date.fromordinal(start)}, after the end of therapy "
                                     f"on {dt.date.fromordinal(self.eot)}: it has no days left")
                return 0
            return length
        return el.length

    def gated(self, element: str, prev_end: int) -> _Open:
        """The next element, starting after ``prev_end`` plus its gap, or later when its
        start gate's blood counts have not recovered ("day X or recovery, whichever is later")."""
        el = self.p.elements[element]
        planned = prev_end + 1 + el.gap
        gate = el.gate
        if gate is None:
            return _Open(element, planned)
        if gate.unknown:
            return _Open(element, planned, f"starts when counts recover ({gate.text}): the thresholds are not "
                         f"specified in the definition (placeholder); projected on the earliest date",
                         f"is projected past a count gate whose thresholds are placeholders ({element})")
        since = [c for c in self.counts if c.date.toordinal() >= prev_end]
        for c in since:
            if _recovered(gate, c):
                day = max(planned, c.date.toordinal())
                return _Open(element, day, f"counts recovered on {c.date} ({gate.text})")
        if not since:
            return _Open(element, planned, f"starts when counts recover ({gate.text}): projected on the earliest "
                         f"date until counts are recorded")
        last = since[-1]
        day = max(planned, self.as_of_ord + 1)
        return _Open(element, day, f"waiting for counts to recover ({gate.text}); last count {last.date}: "
                     f"{_count_text(last)}; projected from the day after {self.as_of}")

    def check_gate(self, element: str, prev_end: int, when: int) -> None:
        """A recorded start before the counts recovered is a deviation (when counts were recorded)."""
        gate = self.p.elements[element].gate
        if gate is None or gate.unknown:
            return
        since = [c for c in self.counts if prev_end <= c.date.toordinal() <= when]
        if since and not any(_recovered(gate, c) for c in since):
            last = since[-1]
            self.deviations.append((when, element, "", "count_gate",
                                    f"{element} started on {dt.date.fromordinal(when)} before counts recovered "
                                    f"({gate.text}); last count {last.date}: {_count_text(last)}"))

    def unmet(self, element: str, facts: dict[str, Any]) -> tuple[list[str], list[str]]:
        """The element's ``requires`` rules against the facts: ``(messages of the rules not
        met, facts still unknown)`` (clinical-facts §5: an ineligible patient is not planned
        into the blinatumomab cycle)."""
        failed: list[str] = []
        waiting: list[str] = []
        for guard, rule, text in self.p.elements[element].requires:
            result = guard(facts)
            if result is False:
                failed.append(f"{rule.message} (rule: {text}; {'; '.join(s.strip() for s in explain(rule.when, facts))})")
            elif result is None:
                waiting.extend(k for k in depends_on(rule.when) if k not in facts and k not in waiting)
        return failed, waiting

    def decide(self, edges: tuple[Edge, ...], chosen: Edge | None, status: str, when: dt.date,
               facts: dict[str, Any], branch: str | None) -> None:
        risk = getattr(self, "risk", None)
        inherited: tuple[str, ...] = ()
        if risk is not None and risk.unverified and any("risk_group" in e.depends_on for e in edges):
            inherited = tuple(f"{r}, behind the risk group" for r in risk.unverified_reasons)
        self.decisions.append(Decision(edges, chosen, status, when, facts, branch, inherited))
