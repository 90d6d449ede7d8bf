"""The vendor registry: every sender the gateway speaks to, by its one name.

Adding a vendor: write `gateway/vendors/<name>.py` exposing `VENDOR`, its schemas in
`schemas/<name>/`, its golden fixtures in `tests/fixtures/<name>/`, and list it here.
"""

from __future__ import annotations

from gateway.vendors.base import Vendor


def registry() -> dict[str, Vendor]:
    """All vendors by name. Built on call, not at import: nothing is constructed at import time."""
    from gateway.vendors import (  # noqa: PLC0415  # imported on call, see docstring
        caliper,
        canvas,
        inspera,
        pearson,
    )

    vendors = (caliper.VENDOR, canvas.VENDOR, inspera.VENDOR, pearson.VENDOR)
    return {vendor.name: vendor for vendor in vendors}
