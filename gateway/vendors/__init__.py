"""The vendor registry: every sender the gateway speaks to, by its one name.

`BUILT_IN` is the only list of the vendors this project ships, one package each
(`gateway/vendors/<name>/`, exposing `VENDOR`; see README, "Adding a vendor"). Other packages add
theirs through the entry-point group `assessment_gateway.vendors`: each entry point names a
module exposing `VENDOR` (or the `Vendor` itself). Nothing else in the gateway names a vendor:
the shared modules find what they need of one (its verifier, settings section, personal-data
keys, component, commands) through its `Vendor` (tests/unit/test_architecture.py checks it).
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Final

from gateway.errors import ConfigError
from gateway.vendors.base import Vendor

ENTRY_POINT_GROUP: Final = "assessment_gateway.vendors"

BUILT_IN: Final = (
    "gateway.vendors.caliper",
    "gateway.vendors.canvas",
    "gateway.vendors.inspera",
    "gateway.vendors.pearson",
    "gateway.vendors.xapi",
)


def registry() -> dict[str, Vendor]:
    """All vendors by name, the built-in ones first. Built on call, not at import: nothing is
    constructed at import time. Raises ConfigError for an entry point that cannot be loaded,
    is no vendor, or takes a name or a route another vendor has."""
    found = [_vendor(importlib.import_module(module), module) for module in BUILT_IN]
    for point in entry_points(group=ENTRY_POINT_GROUP):
        where = f"entry point {point.name} = {point.value} ({ENTRY_POINT_GROUP})"
        try:
            loaded = point.load()
        except Exception as error:  # whatever a third party's import raises: one clear line
            raise ConfigError(f"{where} cannot be loaded: {error!r}") from error
        found.append(_vendor(loaded, where))
    vendors: dict[str, Vendor] = {}
    paths: dict[str, str] = {}
    for vendor in found:
        if vendor.name in vendors:
            raise ConfigError(f"two vendors are named {vendor.name!r}")
        for route in vendor.ingest_routes:
            if route.name != vendor.name:
                raise ConfigError(f"a feed of {vendor.name!r} is named {route.name!r}")
            if route.path in paths:
                owner = paths[route.path]
                raise ConfigError(f"vendors {owner!r} and {vendor.name!r} share a route")
            paths[route.path] = vendor.name
        vendors[vendor.name] = vendor
    return vendors


def _vendor(loaded: object, where: str) -> Vendor:
    """The Vendor a module exposes as `VENDOR`, or the one an entry point names itself."""
    vendor = loaded if isinstance(loaded, Vendor) else getattr(loaded, "VENDOR", None)
    if not isinstance(vendor, Vendor):
        raise ConfigError(f"{where} exposes no VENDOR (a gateway.vendors.base.Vendor)")
    return vendor
