"""`[inspera]`: which hosts exports may be downloaded from and how, their bounds and retries, and
the export API's paths and field names (`gateway inspera export`): Inspera does not document
those, so each one is a setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from gateway.settings import SettingsSection


@dataclass(frozen=True)
class InsperaSettings:
    """Inspera webhooks, export downloads and the export API client."""

    # Hosts exports may be downloaded from (exact names or `*.suffix`).
    download_hosts: tuple[str, ...] = ("*.amazonaws.com", "*.inspera.no", "*.inspera.com")
    # Dev only: allow plain http downloads (loopback test servers).
    allow_http_downloads: bool = False
    # Dev only: allow downloads from loopback, private and link-local addresses. Off, a host that
    # is such an address, or resolves to one, is refused (no SSRF into the gateway's network).
    allow_private_addresses: bool = False
    # Where the pre-signed URL may sit in an `event_by_candidates_export_finished` webhook: its
    # field name is not documented, so these keys (dotted for nested objects) are tried in order.
    url_keys: tuple[str, ...] = (
        "url",
        "downloadUrl",
        "download_url",
        "presignedUrl",
        "presigned_url",
        "fileUrl",
        "exportUrl",
        "data.url",
        "data.downloadUrl",
    )
    # Exports hold every candidate of a test: bounded so that a huge or hostile file cannot fill
    # the disk (it is spooled under server.state_dir) or keep the gateway busy for ever.
    max_export_bytes: int = 512 * 1024 * 1024
    download_timeout_seconds: float = 600.0
    # Redirects are followed only to allowed hosts, and only this many (S3 may redirect once).
    max_redirects: int = 3
    # A failed download is retried with exponential backoff; pre-signed URLs live about 1 h.
    retry_initial_seconds: float = 5.0
    retry_max_seconds: float = 300.0
    max_attempts: int = 12
    # Finished jobs are remembered this long, so a re-delivered webhook is not ingested twice.
    job_retention_seconds: float = 7 * 24 * 3600.0
    # Export events per publish: bounds memory and the size of one Kafka round trip.
    publish_batch: int = 500
    # The pull side (`gateway inspera export`). Inspera's paths and field names are not
    # documented (its swagger was not available), so all of them are settings.
    api_base_url: str = ""  # e.g. https://<institution>.inspera.no
    client_id: str = ""  # the Inspera tenant name (the token request's client_id)
    api_key_env: str = "INSPERA_API_KEY"  # the variable holding the API key, never the key
    token_path: str = "/api/authenticate/token/"  # noqa: S105  # a URL path, not a secret
    events_path: str = "/api/v1/test/{test_id}/events"
    job_id_param: str = "jobId"  # query parameter of the status calls
    job_id_field: str = "jobId"
    status_field: str = "status"
    progress_field: str = "progress"
    done_statuses: tuple[str, ...] = ("FINISHED", "DONE", "COMPLETED", "SUCCESS", "SUCCEEDED")
    failed_statuses: tuple[str, ...] = ("FAILED", "ERROR", "CANCELLED", "CANCELED")
    poll_interval_seconds: float = 5.0
    export_timeout_seconds: float = 3600.0


SECTION: Final = SettingsSection(
    "inspera",
    InsperaSettings,
    positive=frozenset(
        {
            "max_export_bytes",
            "download_timeout_seconds",
            "retry_initial_seconds",
            "retry_max_seconds",
            "max_attempts",
            "publish_batch",
            "poll_interval_seconds",
            "export_timeout_seconds",
        }
    ),
)
