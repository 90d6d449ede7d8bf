"""Assessment-event ingestion gateway: vendor webhooks in, canonical CloudEvents into Kafka."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("assessment-gateway")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
