"""run.json: what a run is (its command and settings) and where and when each session of it ran.

A run folder is resumable, so one run can span sessions; each session appends its start
time and argv, and marks itself finished at the end. A session whose settings differ from
the stored ones is refused: its rows would be mixed with rows of another experiment.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import InvalidInput
from ..results.provenance import utc_now


class RunRecord:
    """The run.json file of one run folder."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def check_same(self, args: dict) -> None:
        """Refuse a folder that holds a run made with other arguments."""
        if not self.path.exists():
            return
        meta = json.loads(self.path.read_text())
        old = meta.get("args", {})
        if old and old != args:
            raise InvalidInput(f"{self.path.parent} holds a run with other settings ({meta['command']}); "
                               "use another --out or delete it")

    def start(self, fields: dict) -> None:
        """A session begins: append its start and argv, and store `fields` (command, args, machine, ...)."""
        self._update(fields, lambda sessions: sessions.append({"started": utc_now(), "argv": sys.argv}))

    def finish(self, fields: dict) -> None:
        """The session ends: mark it finished and store `fields` again."""
        self._update(fields, lambda sessions: sessions[-1].update(finished=utc_now()))

    def _update(self, fields: dict, session) -> None:
        meta = json.loads(self.path.read_text()) if self.path.exists() else {"sessions": []}
        session(meta["sessions"])
        meta.update(fields)
        self.path.write_text(json.dumps(meta, indent=2, default=str) + "\n")
