"""Jobs created from tracker tickets, and the `tracker_*` tools, against the Jira fake."""

from __future__ import annotations

from typing import Any

from coro.config import CoroConfig
from tests.conftest import ApiFactory, write_workflow
from tests.fakes.jira_server import FakeJira

ONE_PHASE = [{"name": "work", "agent": None, "status": "working"}]


def config_with_jira(jira: FakeJira | None) -> CoroConfig:
    installed: dict[str, Any] = {}
    if jira is not None:
        installed["jira"] = {
            "config": {"baseUrl": jira.base_url, "email": jira.email, "apiToken": jira.api_token}
        }
    return CoroConfig.model_validate(
        {"llm": {"defaultProvider": "script"}, "plugins": {"installed": installed}}
    )


def adf(text: str) -> dict[str, Any]:
    paragraph = {"type": "paragraph", "content": [{"type": "text", "text": text}]}
    return {"type": "doc", "version": 1, "content": [paragraph]}


async def test_a_job_from_a_ticket_carries_the_ticket_and_works_on_it(
    api_factory: ApiFactory,
) -> None:
    async with FakeJira() as jira:
        jira.add_issue("PROJ-7", "Fix login redirect", description=adf("Users loop on /login."))
        async with api_factory(config_with_jira(jira)) as api:
            workflow = write_workflow(
                api.home,
                "ticketed",
                [{"name": "triage", "agent": None, "status": "triaging"}, *ONE_PHASE],
                overrides={"jira": {"initial_phase": "work"}},
            )
            script = {
                "work": [
                    {"tool": "tracker_get_issue", "input": {"key": "PROJ-7"}},
                    {
                        "tool": "tracker_transition_issue",
                        "input": {"key": "PROJ-7", "to": "In Progress"},
                    },
                    {
                        "tool": "tracker_comment_issue",
                        "input": {"key": "PROJ-7", "body": "Working on it."},
                    },
                ]
            }
            response = await api.client.post(
                "/jobs",
                json={
                    "workflowPath": workflow,
                    "jiraTicketId": "PROJ-7",
                    "params": {"script": script},
                },
            )
            assert response.status_code == 201, response.text
            job_id = response.json()["jobId"]
            result = await api.finish(job_id)
            job = await api.job(job_id)
    assert result.done == "complete"
    assert job_id.startswith("PROJ-7-job-")
    assert job["triggerSource"] == "jira"
    assert [p["phase"] for p in job["phaseUsage"]] == ["work"]  # the jira override
    ticket = job["params"]["ticket"]
    assert ticket["key"] == "PROJ-7" and ticket["title"] == "Fix login redirect"
    assert "Users loop on /login." in ticket["description"]
    assert "Fix login redirect" in job["params"]["description"]
    assert job["externalRefs"] == [
        {
            "kind": "ticket",
            "pluginId": "jira",
            "repoKey": None,
            "externalId": "PROJ-7",
            "url": ticket["url"],
        }
    ]
    issue = jira.issues["PROJ-7"]
    assert issue.status == "In Progress"
    assert "[tracker] PROJ-7 → In Progress" in result.texts()
    assert "[tracker] Commented on PROJ-7" in result.texts()
    assert len(issue.comments) == 1


async def test_a_ticket_job_needs_a_tracker_and_an_existing_ticket(
    api_factory: ApiFactory,
) -> None:
    async with FakeJira() as jira:
        async with api_factory(config_with_jira(jira)) as api:
            workflow = write_workflow(api.home, "ticketed", ONE_PHASE)
            missing = await api.client.post(
                "/jobs", json={"workflowPath": workflow, "jiraTicketId": "PROJ-404"}
            )
            listed = (await api.client.get("/jobs")).json()
        async with api_factory(config_with_jira(None)) as api:
            workflow = write_workflow(api.home, "ticketed", ONE_PHASE)
            untracked = await api.client.post(
                "/jobs", json={"workflowPath": workflow, "jiraTicketId": "PROJ-1"}
            )
    assert missing.status_code == 400
    assert "PROJ-404" in missing.json()["error"]
    assert listed["total"] == 0  # nothing was created
    assert untracked.status_code == 409
    assert untracked.json()["missingKind"] == "tracker"


async def test_tracker_failures_come_back_to_the_agent(api_factory: ApiFactory) -> None:
    async with FakeJira() as jira:
        jira.add_issue("PROJ-1", "Something")
        async with api_factory(config_with_jira(jira)) as api:
            workflow = write_workflow(api.home, "ticketed", ONE_PHASE)
            script = {
                "work": [
                    {
                        "tool": "tracker_transition_issue",
                        "input": {"key": "PROJ-1", "to": "Nowhere"},
                    },
                    {"tool": "tracker_get_issue", "input": {"key": "NOPE-9"}},
                    {"text": "carried on"},
                ]
            }
            job_id = await api.create(workflow, script)
            result = await api.finish(job_id)
    assert result.done == "complete"
    errors = [t for t in result.texts() if t.startswith("[tool-error]")]
    assert len(errors) == 2
    assert "Nowhere" in errors[0]
    assert "NOPE-9" in errors[1]
    assert "carried on" in result.texts()
    assert jira.api_token is not None
    assert jira.api_token not in "\n".join(result.texts())


async def test_a_tracker_that_refuses_the_credentials_is_a_bad_gateway(
    api_factory: ApiFactory,
) -> None:
    async with FakeJira() as jira:
        jira.add_issue("PROJ-1", "Something")
        wrong = "wrong-jira-token-0123456789"
        config = CoroConfig.model_validate(
            {
                "llm": {"defaultProvider": "script"},
                "plugins": {
                    "installed": {
                        "jira": {
                            "config": {
                                "baseUrl": jira.base_url,
                                "email": jira.email,
                                "apiToken": wrong,
                            }
                        }
                    }
                },
            }
        )
        async with api_factory(config) as api:
            workflow = write_workflow(api.home, "ticketed", ONE_PHASE)
            refused = await api.client.post(
                "/jobs", json={"workflowPath": workflow, "jiraTicketId": "PROJ-1"}
            )
    assert refused.status_code == 502
    assert refused.json()["error"].startswith("jira: ")
    assert wrong not in refused.text
