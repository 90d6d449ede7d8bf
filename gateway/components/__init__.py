"""Vendor components: the stateful parts some vendors need beside the pipeline (read models,
background downloads). Each is built here from the shared services and managed by the app's
lifespan; see `gateway.vendors.base.Component` for the contract.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.components.canvas import CanvasQuizLog
from gateway.components.inspera import InsperaComponent
from gateway.pipeline import Pipeline
from gateway.settings import Settings
from gateway.vendors.base import Component


@dataclass(frozen=True, slots=True)
class ComponentContext:
    """What a component may use: the settings and the pipeline (to publish what it ingests)."""

    settings: Settings
    pipeline: Pipeline


def build_components(ctx: ComponentContext) -> list[Component]:
    """Every vendor component, built (not started)."""
    return [CanvasQuizLog(ctx.settings), InsperaComponent(ctx.settings, ctx.pipeline)]
