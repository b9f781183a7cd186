"""Self-improvement proposals kept on disk in the tenant layer (SPEC §4.8).

A local proposal lives in `<tenant>/proposals/<id>/proposal.json` and never touches
live intelligence until approved. This module reads them; `propose_change` writes them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from coro.engine.models import CamelModel

logger = logging.getLogger(__name__)

ProposalStatus = Literal["pending", "approved", "rejected"]
PROPOSAL_STATUSES: tuple[str, ...] = ("pending", "approved", "rejected")


class ProposalFile(CamelModel):
    path: str
    content: str


class Proposal(CamelModel):
    id: str
    tenant_id: str
    job_id: str
    type: str
    title: str
    rationale: str = ""
    description: str = ""
    status: ProposalStatus = "pending"
    files: list[ProposalFile] = Field(default_factory=list)
    target_layer: Literal["tenant", "repo"] | None = None
    branch: str | None = None
    pr_url: str | None = None
    created_at: str
    updated_at: str

    def summary(self) -> dict[str, Any]:
        data = self.to_json(
            include={
                "id",
                "job_id",
                "type",
                "title",
                "status",
                "target_layer",
                "pr_url",
                "branch",
                "created_at",
                "updated_at",
            }
        )
        data["fileCount"] = len(self.files)
        return data


class ProposalStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def list(self, status: str | None = None, tenant_id: str | None = None) -> list[Proposal]:
        """Proposals newest first; unreadable files are skipped (and logged)."""
        found = []
        for file in sorted(self.root.glob("*/proposal.json")):
            try:
                proposal = Proposal.model_validate(json.loads(file.read_text(encoding="utf-8")))
            except (OSError, ValueError, ValidationError) as exc:
                logger.warning("skipping unreadable proposal %s: %s", file, exc)
                continue
            if status not in (None, proposal.status):
                continue
            if tenant_id not in (None, proposal.tenant_id):
                continue
            found.append(proposal)
        found.sort(key=lambda p: p.created_at, reverse=True)
        return found
