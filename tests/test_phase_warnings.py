"""A phase that ran with nothing to do says so in the job log (a script job without a
script for the phase would otherwise "complete" it without a word)."""

from __future__ import annotations

from tests.conftest import Api, write_workflow

PHASES = [{"name": "plan", "agent": None}, {"name": "build", "agent": None}]


async def test_a_phase_the_executor_had_nothing_for_is_logged_as_a_warning(api: Api) -> None:
    workflow = write_workflow(api.home, "half-scripted", PHASES)
    job_id = await api.create(workflow, {"plan": [{"text": "planned"}]})
    result = await api.finish(job_id)

    assert result.done == "complete", result.texts()
    warnings = [t for t in result.texts() if t.startswith("[warning] Phase")]
    assert warnings == [
        "[warning] Phase build ran with nothing to do: params.script has no steps for phase 'build'"
    ]


async def test_a_job_without_any_script_warns_for_every_phase(api: Api) -> None:
    workflow = write_workflow(api.home, "unscripted", PHASES)
    job_id = await api.create(workflow)
    result = await api.finish(job_id)

    assert result.done == "complete", result.texts()
    nothing = [t.split(" ran with")[0] for t in result.texts() if "ran with nothing to do" in t]
    assert nothing == ["[warning] Phase plan", "[warning] Phase build"]
