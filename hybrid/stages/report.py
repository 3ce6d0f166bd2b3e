"""Stage 6, report: ``report/report.md`` and its figures, from the run's summary alone.

Read-only on the run's outputs (a finished run can be reported from a read-only store); the
writing is ``hybrid.evaluation.report``'s.
"""

from __future__ import annotations

from hybrid.config import Config
from hybrid.evaluation.report import write_report
from hybrid.execution.runner import StageOutcome
from hybrid.execution.session import Session


def run(cfg: Config, session: Session | None = None) -> StageOutcome:
    session = Session.ensure(cfg, session, write=False, existing=True)
    return StageOutcome("report", path=write_report(session.store, session.cfg))
