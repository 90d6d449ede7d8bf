"""The export job table (SQLite): a job is durable, taken once, retried when due, taken over
when its worker's lease runs out, and forgets its URL once it has ended."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.vendors.inspera.exports import ExportJobs, backoff_seconds
from gateway.vendors.inspera.settings import InsperaSettings

URL = "https://bucket.s3.amazonaws.com/e.json?X-Amz-Signature=secret"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def jobs(tmp_path: Path, clock: Clock) -> Iterator[ExportJobs]:
    table = ExportJobs(tmp_path / "state" / "jobs.sqlite3", clock)
    table.open()
    yield table
    table.close()


def test_a_job_is_added_once(jobs: ExportJobs) -> None:
    assert jobs.add("demo|e|1|t", "demo", "1", URL, "req-1")
    assert not jobs.add("demo|e|1|t", "demo", "1", URL, "req-2")
    job = jobs.claim()
    assert job is not None
    assert (job.tenant, job.test_id, job.url, job.request_id, job.attempts) == (
        "demo",
        "1",
        URL,
        "req-1",
        1,
    )
    assert jobs.claim() is None  # running: nobody else takes it


def test_a_job_survives_reopening(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "jobs.sqlite3"
    first = ExportJobs(path, clock)
    first.open()
    first.add("k", "demo", "1", URL, "req")
    first.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds pre-signed URLs
    second = ExportJobs(path, clock)
    second.open()
    job = second.claim()
    second.close()
    assert job is not None
    assert job.url == URL


def test_a_retry_is_due_after_its_delay(jobs: ExportJobs, clock: Clock) -> None:
    jobs.add("k", "demo", "1", URL, "req")
    claimed = jobs.claim()
    assert claimed is not None
    jobs.retry("k", "transport_ConnectError", delay=30)
    assert jobs.claim() is None
    assert jobs.next_due() == clock.now + 30
    clock.now += 31
    again = jobs.claim()
    assert again is not None
    assert again.attempts == 2
    assert jobs.state("k") == ("running", 2, "transport_ConnectError")


def test_a_released_job_is_due_at_once_and_the_try_does_not_count(jobs: ExportJobs) -> None:
    jobs.add("k", "demo", "1", URL, "req")
    assert jobs.claim() is not None
    jobs.release("k")
    job = jobs.claim()
    assert job is not None
    assert job.attempts == 1


def test_a_dead_workers_job_is_taken_over_when_its_lease_runs_out(
    jobs: ExportJobs, clock: Clock
) -> None:
    jobs.add("k", "demo", "1", URL, "req")
    assert jobs.claim(lease_seconds=60) is not None
    clock.now += 30
    assert jobs.claim() is None
    jobs.renew("k", lease_seconds=60)
    clock.now += 59
    assert jobs.claim() is None
    clock.now += 2
    assert jobs.claim() is not None


def test_an_ended_job_forgets_its_url_and_is_not_taken_again(
    jobs: ExportJobs, clock: Clock
) -> None:
    jobs.add("done", "demo", "1", URL, "req")
    jobs.add("failed", "demo", "2", URL, "req")
    jobs.finish("done", "done")
    jobs.finish("failed", "failed", "host_not_allowed")
    assert jobs.claim() is None
    assert jobs.state("failed") == ("failed", 0, "host_not_allowed")
    urls = jobs.db.execute("SELECT url FROM export_jobs").fetchall()
    assert urls == [(None,), (None,)]
    assert not jobs.add("done", "demo", "1", URL, "req")  # a re-delivery is still known
    clock.now += 100
    assert jobs.purge(older_than_seconds=50) == 2
    assert jobs.add("done", "demo", "1", URL, "req")  # past the retention, forgotten


def test_backoff_grows_and_is_capped() -> None:
    settings = InsperaSettings(retry_initial_seconds=2, retry_max_seconds=60)
    delays = [backoff_seconds(n, settings) for n in range(1, 9)]
    assert 1.6 <= delays[0] <= 2
    assert 6.4 <= delays[2] <= 8
    assert all(48 <= d <= 60 for d in delays[5:])
