"""Workflow and agent markdown, resolved through intelligence layers (SPEC §4.8)."""

from coro.intelligence.layers import (
    BASE_LAYER_DIR,
    IntelligenceLayers,
    WorkflowNotFound,
    summarize_workflow,
)

__all__ = [
    "BASE_LAYER_DIR",
    "IntelligenceLayers",
    "WorkflowNotFound",
    "summarize_workflow",
]
