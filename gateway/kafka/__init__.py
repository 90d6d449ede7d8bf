"""Kafka in one place: how the gateway's clients connect (`security`), the producer (`producer`,
librdkafka) and what publishes through it safely (`publisher`: acknowledged or spooled), the
local spool and its quarantine (`spool`), the record type they share (`records`), the topic
followers of read models (`follower`), the short-lived consumers' helpers (`consumers`), the
client library's log lines (`log`) and the embedded broker of development and tests (`broker`).

Outside this package only the tools that read a topic (`gateway tail`) build a Kafka client, and
they too connect through `security`; the request path hands its records to the `Publisher`
(tests/unit/test_architecture.py checks who imports a Kafka client library).
"""
