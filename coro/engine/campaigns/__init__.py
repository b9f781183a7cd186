"""Campaigns (SPEC §4.5): a job whose children are jobs of their own.

A campaign's agents define children (`campaign_register_child`), each with a
description, its own params and the children it depends on, then `campaign_finalize`
checks the plan and moves the campaign to its `coordinating` phase, an agent-less phase
where it parks (`awaiting-children`). From there the **coordinator** owns it:

- a child whose dependencies are all satisfied (complete, skipped or cancelled) becomes
  `ready`, and ready children are dispatched in list order as new jobs, never more than
  `coordination.maxParallelChildren` at once (counting `dispatched` ones);
- a child job that stops maps onto its child (complete, failed, escalated, cancelled),
  and its own insights are kept on the campaign for the children dispatched after it;
- a `failed` or `escalated` child halts the campaign: it parks in
  `awaiting-developer-input` with a message saying which child and why, and nothing
  more is dispatched until a developer resolves it (resume, rerun, skip or cancel);
- once every child is terminal the campaign resumes in the phase after `coordinating`
  with a fresh session.

The coordinator sweeps when the campaign parks in `coordinating`, after every child
stop and after every control. Sweeps and controls of one campaign run one at a time
(a lock per campaign), so a child that stops at once can never overtake the bookkeeping
of its own dispatch. Everything the runner writes is logged on the campaign (and on the
child where it concerns the child).

The modules:

- `model`: the child statuses and the pure rules over them (readiness, cycles, plans);
- `planning`: defining a campaign's children (`register_child`, `finalize`), over the
  job store alone, so it also works without a running coordinator;
- `coordinator`: `CampaignService`, which dispatches children, sweeps, carries out the
  developer's controls and recovers after a restart;
- `reports`: what agents (`campaign_status`) and the API see of a campaign;
- `switching`: moving a job to another workflow in place (`switch_workflow`,
  `convert_to_campaign`);
- `tools`: the agents' tools over all of these.
"""
