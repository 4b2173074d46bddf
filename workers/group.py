"""Ray actor groups: N ranks of one role, created together, called together, bounded in time."""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import ray

from tdrm_rl.cli.runtime import worker_env
from tdrm_rl.config import RunConfig


class RoleError(RuntimeError):
    """A remote call failed or timed out; the message names the role and the stage."""


class WorkerDied(RoleError):
    """An actor of `role` died (killed, OOM, node lost); the driver may restart the group and retry."""

    def __init__(self, role: str, message: str) -> None:
        super().__init__(message)
        self.role = role


class WorkerGroup:
    """`world_size` actors of class `cls`. Rank 0 hands out the rendezvous address when distributed.

    With `start=False` the actors are created but not waited on; `start_groups` brings several groups up at once.
    """

    def __init__(self, cls: type, role: str, cfg: RunConfig, world_size: int = 1, num_cpus: float = 0.5,
                 num_gpus: float = 0.0, distributed: bool = False, placement: Any = None, start: bool = True,
                 **kwargs: Any) -> None:
        self.role = role
        self.timeout = cfg.cluster.call_timeout_s
        self.restarts = 0
        self.placement = placement  # a tdrm_rl.workers.placement.Placement: per-rank bundles, released on kill()
        remote_cls = ray.remote(cls)
        options = dict(num_cpus=num_cpus, num_gpus=num_gpus, runtime_env={"env_vars": worker_env()})
        per_rank = placement.options(role) if placement is not None else [{}] * world_size
        # Kept so that `restart` builds the very same actors again, in the same bundles.
        self._spawn = lambda: [remote_cls.options(**{**options, **per_rank[rank]}).remote(
            cfg, rank=rank, world_size=world_size, **kwargs) for rank in range(world_size)]
        self.distributed = distributed
        self.actors = self._spawn()
        if start:
            start_groups([self])

    def _stage_refs(self, stage: str) -> list[ray.ObjectRef]:
        if stage == "start":
            return [a.ready.remote() for a in self.actors]
        if stage == "init_distributed":
            if not self.distributed:
                return []
            addr, port = self.get(self.actors[0].node_address.remote(), stage="rendezvous")
            return self.submit("setup_distributed", addr, port)
        return self.submit("setup")

    def restart(self) -> None:
        """Replace every rank (survivors of a distributed group would wait on the dead one forever).

        The new actors hold the initial weights; the caller loads the state it needs into them.
        The placement bundles are kept: the new ranks land where the old ones were.
        """
        self._kill_actors()
        self.restarts += 1
        self.actors = self._spawn()
        start_groups([self])

    def who(self, rank: int) -> str:
        """The role, and the rank when the group has more than one."""
        return f"{self.role} rank {rank}" if len(self.actors) > 1 else self.role

    def get(self, refs: Any, stage: str, timeout: float | None = None,
            timeout_key: str = "cluster.call_timeout_s") -> Any:
        """Wait for `refs` (one ref, or a list whose index is the rank) within one deadline.

        Every rank is awaited; the first rank to fail raises at once, naming the role, the rank and the stage
        (its peers may be blocked in a collective with it, so waiting for them would only run into the timeout).
        """
        timeout = self.timeout if timeout is None else timeout
        many = isinstance(refs, list)
        pending = {ref: rank for rank, ref in enumerate(refs if many else [refs])}
        results: list[Any] = [None] * len(pending)
        deadline = time.monotonic() + timeout
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not done:
                late = sorted(pending.values())
                who = self.role if len(results) == 1 else f"{self.role} rank {', '.join(map(str, late))}"
                raise RoleError(f"{who}: stage '{stage}' did not finish within {timeout:.0f} s ({timeout_key})")
            for ref in done:
                rank = pending.pop(ref)
                results[rank] = self._result(ref, stage, rank)
        return results if many else results[0]

    def _result(self, ref: ray.ObjectRef, stage: str, rank: int) -> Any:
        who = self.who(rank)
        try:
            return ray.get(ref, timeout=0)
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as e:
            cause = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise WorkerDied(self.role, f"{who}: worker died during stage '{stage}': {cause}") from None
        except ray.exceptions.OutOfMemoryError:
            # Ray's memory monitor killed the worker: the node ran low on memory (ours or another process's).
            raise WorkerDied(self.role, f"{who}: worker killed by Ray's memory monitor during stage '{stage}' (the "
                                        "node ran low on memory)") from None
        except ray.exceptions.RayTaskError as e:
            raise RoleError(f"{who}: stage '{stage}' failed: {e.cause!r}") from e

    def submit(self, method: str, *args: Any, **kwargs: Any) -> list[ray.ObjectRef]:
        """Call `method` on every rank; returns the refs (index = rank) to gather later with `get`."""
        return [getattr(a, method).remote(*args, **kwargs) for a in self.actors]

    def start(self, method: str, *args: Any, stage: str | None = None, **kwargs: Any) -> "Call":
        """Start `method` on every rank without waiting: `.result()` later gives rank 0's answer."""
        return Call(self, self.submit(method, *args, **kwargs), stage or method)

    def call(self, method: str, *args: Any, stage: str | None = None, **kwargs: Any) -> Any:
        """Run `method` on every rank, wait for all of them, return rank 0's answer (data-parallel ranks
        agree; rank 0 speaks for the group). Any rank's failure raises, naming it."""
        return self.start(method, *args, stage=stage, **kwargs).result()

    def run(self, method: str, *args: Any, stage: str | None = None, **kwargs: Any) -> list[Any]:
        """Run `method` on every rank and return every rank's answer, in rank order."""
        return self.get(self.submit(method, *args, **kwargs), stage=stage or method)

    def run_rank0(self, method: str, *args: Any, stage: str | None = None, **kwargs: Any) -> Any:
        """Run `method` on rank 0 only (a question only rank 0 can answer, e.g. its rendezvous address)."""
        return self.get(getattr(self.actors[0], method).remote(*args, **kwargs), stage=stage or method)

    def _kill_actors(self) -> None:
        for a in self.actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # already gone
                pass

    def kill(self) -> None:
        self._kill_actors()
        if self.placement is not None:
            self.placement.release(self.role)


class Call(NamedTuple):
    """A method running on every rank of `group`; `result()` waits for all of them and returns rank 0's answer."""

    group: WorkerGroup
    refs: list
    stage: str

    def result(self) -> Any:
        return self.group.get(self.refs, stage=self.stage)[0]


def start_groups(groups: list[WorkerGroup]) -> None:
    """Wait for every group's actors, stage by stage, with each stage running in all groups at once.

    Their processes import torch and load weights in parallel: on the tiny run this takes startup from about
    35 s (one group after another) to about 15 s.
    """
    for stage in ("start", "init_distributed", "setup"):
        refs = [g._stage_refs(stage) for g in groups]
        for group, group_refs in zip(groups, refs):
            group.get(group_refs, stage=stage)


class _LocalHandle:
    """What a Ray actor handle offers (`handle.method.remote(*args)`), for a worker object in this process:
    the call runs at once and its result stands in for the ref."""

    def __init__(self, worker: Any) -> None:
        self.worker = worker

    def __getattr__(self, method: str) -> Any:
        call = getattr(self.worker, method)
        return type("LocalMethod", (), {"remote": staticmethod(lambda *a, **k: call(*a, **k))})()


class LocalGroup(WorkerGroup):
    """The same calls as WorkerGroup on worker objects in this process (one per rank), with no Ray: for tests of
    the stage logic and for tools that run a role in-process. Results come back at once; errors raise at once."""

    def __init__(self, workers: list[Any], role: str, timeout: float = 600.0) -> None:
        self.role, self.timeout, self.restarts, self.placement, self.distributed = role, timeout, 0, None, False
        self.workers = workers
        self.actors = [_LocalHandle(w) for w in workers]

    def get(self, refs: Any, stage: str, timeout: float | None = None,
            timeout_key: str = "cluster.call_timeout_s") -> Any:
        return refs  # the results themselves

    def restart(self) -> None:
        raise RoleError(f"{self.role}: an in-process group cannot restart its workers")

    def kill(self) -> None:
        pass
