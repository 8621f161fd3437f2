"""An example Crops policy in Python: the `crops:policy@0.2.0` `policy` world.

Admission is the SPEC plan table's limits (concurrent = creating + created +
running; self-hosted workers), placement is least-loaded with every stock
constraint filter, so this module passes policies/conformance/stock.json
exactly as the Rust stock policies do. The candidates come packed; the SDK
(policies/sdk/python/crops_policy.py) gives them as plain `Worker` records.
Build it with ../build.sh (componentize-py); test it with

    crops-orchestrator policy test policies/dist/examples/python.wasm \
        --cases policies/conformance/stock.json

It must stay pure: no clock, no randomness, no files, no network. The host
grants none of them anyway (its WASI context is empty, clocks are fixed,
random is seeded); `print` goes to the decision's log, capped at 16 KiB.
"""

from typing import List, Optional

import crops_policy
import wit_world
from wit_world.imports.types import (
    Admission,
    Admission_Allow,
    Admission_Deny,
    Candidates,
    Placement,
    Plan,
    Profile,
    Request,
    Usage,
    Verdict,
    Worker,
    WorkerMode,
)

LOCAL_IMAGE_PREFIX = "localhost/"
STRATEGY = "least-loaded"
PROFILE_NAMES = {
    Profile.OPEN: "open",
    Profile.STANDARD: "standard",
    Profile.STRICT: "strict",
    Profile.OFFLINE: "offline",
}


class WitWorld(wit_world.WitWorld):
    def admit(self, req: Request, plan: Plan, usage: Usage) -> Admission:
        limit = plan.concurrent_containers
        if limit is None:
            return Admission_Allow()
        held = usage.creating + usage.created + usage.running
        if held >= limit:
            return Admission_Deny(
                f"plan {plan.name} allows {limit} concurrent containers and the "
                f"tenant has {held} (creating, created or running)"
            )
        return Admission_Allow()

    def admit_worker(self, tenant_id: str, plan: Plan, usage: Usage) -> Admission:
        limit = plan.self_hosted_workers
        if limit is None:
            return Admission_Allow()
        if usage.self_hosted_workers >= limit:
            return Admission_Deny(
                f"plan {plan.name} allows {limit} self-hosted workers and the "
                f"tenant has {usage.self_hosted_workers}"
            )
        return Admission_Allow()

    def place(self, req: Request, candidates: Candidates) -> Placement:
        workers = crops_policy.workers(candidates)
        verdicts: List[Verdict] = []
        best: Optional[int] = None
        best_score = 0
        best_id = ""
        for i, w in enumerate(workers):
            why = reject(req, w)
            if why is not None:
                verdicts.append(Verdict(False, why, 0))
                continue
            score = least_loaded(w)
            # The best score wins; ties go to the smallest id.
            if best is None or score > best_score or (score == best_score and w.id < best_id):
                best, best_score, best_id = i, score, w.id
            verdicts.append(Verdict(True, "", score))
        if best is None:
            reason = f"{STRATEGY}: no worker fits among {len(workers)} candidates"
        else:
            feasible = sum(1 for v in verdicts if v.feasible)
            reason = (
                f"{STRATEGY}: {best_id} has the best score {best_score} of "
                f"{feasible} feasible among {len(workers)} candidates"
            )
        return Placement(verdicts, best, reason)


def reject(req: Request, w: Worker) -> Optional[str]:
    """Why `w` cannot take `req`, or None: the stock constraint filters."""
    if req.pinned_worker is not None and req.pinned_worker != w.id:
        return f"not the pinned worker {req.pinned_worker}"
    if not w.online:
        return "offline"
    if w.drained:
        return "drained"
    if w.cordoned:
        return "cordoned"
    if w.mode == WorkerMode.BYOM and w.tenant_id != req.tenant_id:
        return "a self-hosted worker of another tenant"
    platform = req.platform if req.platform is not None else "linux"
    if w.platform != platform:
        return f"platform {shown(w.platform)} (needs {platform})"
    if req.arch is not None and w.arch != req.arch:
        return f"arch {shown(w.arch)} (needs {req.arch})"
    if req.region is not None and w.region != req.region:
        return f"region {shown(w.region)} (needs {req.region})"
    if req.profile.value < w.security_floor.value:
        return (
            f"security floor {PROFILE_NAMES[w.security_floor]} rejects profile "
            f"{PROFILE_NAMES[req.profile]}"
        )
    if req.image.startswith(LOCAL_IMAGE_PREFIX) and req.image not in w.images:
        return f"local image {req.image} is not on this worker"
    return None


def least_loaded(w: Worker) -> int:
    """Higher is better: idle CPU plus free memory, each in per mille."""
    return 2000 - min(w.cpu_load_permille, 1000) - used_permille(w)


def used_permille(w: Worker) -> int:
    if w.memory_total == 0:
        return 1000
    used = max(w.memory_total - w.memory_free, 0)
    return min(used * 1000 // w.memory_total, 1000)


def shown(value: str) -> str:
    return value if value else "unknown"
