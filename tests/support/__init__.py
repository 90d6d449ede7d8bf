"""Helpers the tests share (builders of vendor requests, the running gateway, a Kafka reader,
the golden-file driver). Test modules import from here, never from one another."""
