"""`[canvas]`: where the quiz log's read model is kept and how long its GETs wait for it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from gateway.settings import SettingsSection


@dataclass(frozen=True)
class CanvasSettings:
    """Canvas quiz submission events and the quiz-log read model."""

    # The quiz log's SQLite file; "" = <server.state_dir>/canvas-quiz-log.sqlite3. Every gateway
    # process keeps a whole read model of the canonical topic (all partitions, no consumer group:
    # a group would split the partitions, and each instance's log would miss events), with the
    # consumed offsets in the same file. Worker processes of one instance share it.
    quiz_log_path: str = ""
    # How long a GET of the quiz log waits for the read model to reach the topic's end offsets,
    # so that a GET right after a 204 sees its events; past it, the log is served as it is.
    quiz_log_wait_seconds: float = 2.0


SECTION: Final = SettingsSection("canvas", CanvasSettings)
