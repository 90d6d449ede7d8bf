"""`[canvas]`: where the quiz log's read model is kept and how long its GETs wait for it; where
Canvas Live Events' signing keys are published and how often they are fetched again."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from gateway.settings import SettingsSection

# Instructure's published JWKS for Live Events' "signed JWT payloads" (Canvas Guides, "How do I
# configure and test Canvas Live Events using HTTPS delivery?"): the keys rotate monthly.
INSTRUCTURE_LIVE_EVENTS_JWKS_URL: Final = (
    "https://8axpcl50e4.execute-api.us-east-1.amazonaws.com/main/jwks"
)


@dataclass(frozen=True)
class CanvasSettings:
    """Canvas quiz submission events, the quiz-log read model and Canvas Live Events."""

    # The quiz log's SQLite file; "" = <server.state_dir>/canvas-quiz-log.sqlite3. Every gateway
    # process keeps a whole read model of the canonical topic (all partitions, no consumer group:
    # a group would split the partitions, and each instance's log would miss events), with the
    # consumed offsets in the same file. Worker processes of one instance share it.
    quiz_log_path: str = ""
    # How long a GET of the quiz log waits for the read model to reach the topic's end offsets,
    # so that a GET right after a 204 sees its events; past it, the log is served as it is.
    quiz_log_wait_seconds: float = 2.0
    # Where the keys that sign Live Events are published (a JWKS). Fetched at start-up, then
    # every `live_events_jwks_refresh_seconds`, and when a token names a key not known yet.
    live_events_jwks_url: str = INSTRUCTURE_LIVE_EVENTS_JWKS_URL
    # The periodic refetch: keys rotate monthly, a new one appears before it signs anything.
    live_events_jwks_refresh_seconds: float = 3600.0
    # At most one fetch per this many seconds because a token named an unknown `kid`: a flood of
    # made-up kids costs one fetch per interval, not one per request.
    live_events_jwks_min_refetch_seconds: float = 30.0
    # One fetch of the JWKS may take this long and be this large; past either it fails.
    live_events_jwks_timeout_seconds: float = 5.0
    live_events_jwks_max_bytes: int = 65536
    # Seconds of clock difference allowed on `exp`, `nbf` and `iat` when a token has them.
    live_events_leeway_seconds: float = 60.0


SECTION: Final = SettingsSection(
    "canvas",
    CanvasSettings,
    positive=frozenset(
        {
            "live_events_jwks_refresh_seconds",
            "live_events_jwks_min_refetch_seconds",
            "live_events_jwks_timeout_seconds",
            "live_events_jwks_max_bytes",
        }
    ),
    not_negative=frozenset({"live_events_leeway_seconds"}),
)
