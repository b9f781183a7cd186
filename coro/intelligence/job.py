"""A job's intelligence at a phase boundary: refresh, materialise, re-read (SPEC §4.3).

At every phase start the phase loop calls `prepare_phase()`, which

1. refreshes the tenant remote if one is configured and its interval has passed
   (failures become notes, never exceptions);
2. builds the job's layer stack (base → remote → tenant → each checkout's `.coro/`)
   and materialises it into `work/<jobId>/_intelligence/`;
3. re-reads the job's workflow through that stack, so a repository's `.coro/` can
   override it once cloned — unless the new file is unusable or no longer declares
   the current phase, in which case the workflow loaded before is kept (with a note);
4. reads the phase's agent markdown through the same stack.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from coro.domain.models import Job
from coro.domain.workflows import Workflow, WorkflowError
from coro.intelligence.layers import (
    IntelligenceLayers,
    LayerStack,
    WorkflowNotFound,
    agent_file,
)
from coro.intelligence.materialise import (
    INSTRUCTIONS_FILE,
    INTELLIGENCE_DIRNAME,
    Materialised,
    materialise,
)

T = TypeVar("T")


@dataclass
class PhaseIntelligence:
    stack: LayerStack
    workflow: Workflow
    materialised: Materialised | None
    #: the layer the phase's agent markdown came from, and the markdown
    agent_layer: str | None = None
    agent_markdown: str | None = None
    #: the merged `.claude/CLAUDE.md` (every layer's part under its banner), if any
    instructions: str | None = None
    #: lines for the job log (warnings first, then a one-line summary)
    notes: list[str] = field(default_factory=list)


#: The threads phase starts read and materialise layers in. This is Python making many
#: small system calls, which gains nothing from more threads under the GIL: the
#: default executor's (up to six) would only take turns with each other and the event
#: loop, at a cost in hand-offs that exceeds the work itself. Two, so that one slow file
#: system call does not hold up every job.
_EXECUTOR = ThreadPoolExecutor(max_workers=2, thread_name_prefix="coro-intelligence")


async def _in_thread(func: Callable[..., T], /, *args: object) -> T:
    """`asyncio.to_thread` on the intelligence threads (the context goes along)."""
    context = contextvars.copy_context()
    call = functools.partial(context.run, func, *args)
    return await asyncio.get_running_loop().run_in_executor(_EXECUTOR, call)


async def load_workflow(layers: IntelligenceLayers, workflow_path: str) -> Workflow:
    """`layers.load_workflow` in a thread (the same errors)."""
    return await _in_thread(layers.load_workflow, workflow_path)


async def prepare_phase(
    layers: IntelligenceLayers, job: Job, workdir: Path, workflow: Workflow
) -> PhaseIntelligence:
    """The intelligence for the phase `job.phase` is about to run (see module doc)."""
    await layers.refresh()
    return await _in_thread(_prepare, layers, job, workdir, workflow)


def _prepare(
    layers: IntelligenceLayers, job: Job, workdir: Path, workflow: Workflow
) -> PhaseIntelligence:
    stack = layers.for_job(job, workdir)
    notes: list[str] = []
    current = workflow
    workflow_layer: str | None = None
    try:
        layer, reloaded = stack.load_workflow_from(job.workflow_path)
    except (WorkflowError, WorkflowNotFound, ValueError) as exc:
        notes.append(f"kept the workflow loaded earlier: {exc}")
    else:
        if reloaded.phase(job.phase) is None:
            notes.append(
                f"kept the workflow loaded earlier: {reloaded.source} does not declare "
                f"phase {job.phase!r}"
            )
        else:
            current = reloaded
            workflow_layer = layer.name

    materialised: Materialised | None = None
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        materialised = materialise(
            stack, workdir / INTELLIGENCE_DIRNAME, _used_by(current, job.workflow_path)
        )
        notes.extend(materialised.warnings)
    except OSError as exc:
        notes.extend(stack.warnings)
        notes.append(f"could not materialise the layers into {INTELLIGENCE_DIRNAME}/: {exc}")

    result = PhaseIntelligence(stack=stack, workflow=current, materialised=materialised)
    # The directory holds exactly the files materialised: no CLAUDE.md among them, none there.
    if materialised is not None and INSTRUCTIONS_FILE in materialised.sources:
        result.instructions = _read_capped(materialised.directory / INSTRUCTIONS_FILE)
    phase = current.phase(job.phase)
    if phase is not None and phase.agent:
        try:
            found = stack.read_agent_from(phase.agent)
        except ValueError as exc:
            notes.append(f"agent {phase.agent} refused: {exc}")
            found = None
        if found is not None:
            result.agent_layer, result.agent_markdown = found[0].name, found[1]

    summary = "Layers " + " → ".join(stack.names())
    if materialised is not None:
        summary += f"; {len(materialised.sources)} files in {INTELLIGENCE_DIRNAME}/"
    if workflow_layer:
        summary += f"; workflow from {workflow_layer}"
    if result.agent_layer and phase is not None:
        summary += f"; {phase.agent} from {result.agent_layer}"
    notes.append(summary)
    result.notes = notes
    return result


#: Materialised for every job: instructions, memory, snippets and skills (under .claude/).
SHARED_PREFIXES = (".claude/", "memory/", "snippets/")


def _used_by(workflow: Workflow, workflow_path: str) -> Callable[[str], bool]:
    """Which files a job's `_intelligence/` holds: the shared ones, its own workflow and
    the agents that workflow names (other lanes' files are not the job's concern, and
    writing them for every job would make each phase start slow)."""
    own = {workflow_path, workflow.path}
    for phase in workflow.phases:
        if phase.agent:
            own.add(agent_file(phase.agent))
        own.update(agent_file(sub.agent) for sub in phase.subagents if sub.agent)
    return lambda relative: relative in own or relative.startswith(SHARED_PREFIXES)


#: Project instructions beyond this are cut (a runaway CLAUDE.md must not eat the context).
MAX_INSTRUCTIONS_BYTES = 64 * 1024


def _read_capped(path: Path) -> str | None:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_INSTRUCTIONS_BYTES + 1)
    except OSError:
        return None
    text = data[:MAX_INSTRUCTIONS_BYTES].decode("utf-8", "replace")
    return text + "\n[… cut]" if len(data) > MAX_INSTRUCTIONS_BYTES else text
