"""Trainer -> rollout weight sync: the mode a recipe picks, the trainer's side of each path, the driver's call.

Modes (rollout.weight_sync):
    inprocess  HF rollout worker: load_state_dict of policy rank 0's state dict (shipped by Ray).
    reload     vLLM: a safetensors file of the full weights that the engines load through collective_rpc. Where
               every engine shares policy rank 0's node (tensor_parallel_size 1), rank 0 writes the file itself
               (/dev/shm when it fits) and only its path travels; otherwise Ray ships the state dict and each
               engine writes (or, with tensor parallelism, blobs) it (CPU and GPU).
    nccl       vLLM on separate GPUs: trainer rank 0 broadcasts flat buckets over a NCCL group
               that it and every vLLM worker join (vLLM's StatelessProcessGroup + PyNcclCommunicator).
    ipc        vLLM colocated with the trainer: CUDA IPC handles of the trainer's buckets.
Under ZeRO-3 every policy rank takes part (the parameters are gathered bucket by bucket); rank 0 sends.
Rollout is locked while weights move (WeightsLock), and a sync that overruns rollout.sync_timeout_s
fails with an error naming the mode.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

import torch

if TYPE_CHECKING:  # annotations only: the trainer side imports with torch alone
    from tdrm_rl.config import RolloutConfig, RunConfig

# Flat buckets of at most this many bytes: big enough to keep NCCL busy, small enough that a gathered
# ZeRO-3 bucket is a modest extra allocation.
BUCKET_BYTES = 256 * 1024 * 1024

Plan = list[list[tuple[str, str, tuple[int, ...]]]]
SHM = "/dev/shm"  # where a `reload` weight file goes when it fits: memory-backed on Linux


class WeightSyncError(RuntimeError):
    """A weight sync failed or overran; the message names the mode and the key to change."""


def unshared(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict with no two names on one storage, as safetensors requires: a tied model's lm_head.weight is
    its embedding's tensor (the trainer exports it once under both names), so the second name gets a copy (vLLM's
    loader skips a tied lm_head anyway)."""
    seen: set[int] = set()
    out = {}
    for name, tensor in state_dict.items():
        key = tensor.untyped_storage().data_ptr()
        out[name] = tensor.contiguous() if key not in seen else tensor.clone()
        seen.add(key)
    return out


def weights_file_path(state_dict: dict[str, torch.Tensor]) -> str:
    """A fresh file name for one weight load: in /dev/shm (memory, no disk write) when it has room, else the temp dir."""
    need = 2 * sum(t.numel() * t.element_size() for t in state_dict.values())  # headroom: header, another load
    folder = tempfile.gettempdir()
    if os.path.isdir(SHM) and os.access(SHM, os.W_OK):
        stats = os.statvfs(SHM)
        if stats.f_bavail * stats.f_frsize >= need:
            folder = SHM
    fd, path = tempfile.mkstemp(prefix="tdrm-weights-", suffix=".safetensors", dir=folder)
    os.close(fd)
    return path


def write_weights_file(state_dict: dict[str, torch.Tensor]) -> str:
    """The state dict as a fresh safetensors file (see weights_file_path); nothing is left behind if writing fails."""
    from safetensors.torch import save_file

    state = unshared(state_dict)
    path = weights_file_path(state)
    try:
        save_file(state, path)
    except BaseException:
        os.unlink(path)
        raise
    return path


def remove_weights_file(path: str) -> None:
    if os.path.exists(path):
        os.unlink(path)


def require_pynccl(comm: Any, where: str) -> Any:
    """`comm` (vLLM's PyNcclCommunicator) if it can really communicate, else WeightSyncError.

    PyNcclCommunicator disables itself without raising when libnccl fails to load, when VLLM_DISABLE_PYNCCL is set
    or when its group has one rank, and its `broadcast` then returns at once: the sender would send nothing and the
    receiver would load uninitialised `torch.empty` buckets, with the version check still passing."""
    if not getattr(comm, "available", False) or getattr(comm, "disabled", True):
        raise WeightSyncError(f"{where}: vLLM's PyNcclCommunicator is disabled (libnccl failed to load, "
                              f"VLLM_DISABLE_PYNCCL is set, or the weight group has a single rank), so a broadcast "
                              f"would move nothing; rollout.weight_sync=nccl needs NCCL on every trainer and engine GPU")
    return comm


def resolve_weight_sync(rc: RolloutConfig, colocate: bool, gpu: bool) -> str:
    """`auto`: inprocess for hf; reload for vllm on CPU; ipc when colocated on GPU, else nccl."""
    if rc.weight_sync != "auto":
        return rc.weight_sync
    if rc.backend == "hf":
        return "inprocess"
    if not gpu:
        return "reload"
    return "ipc" if colocate else "nccl"


def bucket_plan(params: list[tuple[str, torch.dtype, tuple[int, ...]]], bucket_bytes: int = BUCKET_BYTES) -> Plan:
    """Group parameters, in order, into single-dtype buckets of at most `bucket_bytes` (a big tensor gets its own)."""
    plan: Plan = []
    current: list[tuple[str, str, tuple[int, ...]]] = []
    size, dtype = 0, None
    for name, dt, shape in params:
        nbytes = int(torch.Size(shape).numel()) * torch.empty((), dtype=dt).element_size()
        if current and (dt != dtype or size + nbytes > bucket_bytes):
            plan.append(current)
            current, size = [], 0
        current.append((name, str(dt).removeprefix("torch."), tuple(shape)))
        size += nbytes
        dtype = dt
    if current:
        plan.append(current)
    return plan


class WeightsLock:
    """Generation waits while weights move; a stuck sync becomes a clear error, never a hang."""

    def __init__(self, role: str, timeout_s: float) -> None:
        self.role = role
        self.timeout_s = timeout_s
        self._lock = threading.Lock()

    @contextmanager
    def hold(self, what: str) -> Iterator[None]:
        if not self._lock.acquire(timeout=self.timeout_s):
            raise WeightSyncError(f"{self.role}: '{what}' waited {self.timeout_s:.0f} s for the weights lock "
                                  f"(a weight sync is still running; rollout.sync_timeout_s)")
        try:
            yield
        finally:
            self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()


class WeightSender:
    """Mixin for the policy trainer (a DeepSpeedWorker): its side of the nccl and ipc paths."""

    def write_weights_file(self) -> str | None:
        """`reload` on one node: the full weights as a safetensors file on this node (rank 0's path; None on the
        other ranks, which join the ZeRO-3 gathers). No state dict goes through Ray's object store: for SmolLM2-135M
        on CPU that copy cost more than the engine's load of the file."""
        state = self.export_state_dict()
        return write_weights_file(state) if self.rank == 0 else None

    def remove_weights_file(self, path: str) -> None:
        remove_weights_file(path)

    def _named_params(self) -> list[tuple[str, torch.nn.Parameter]]:
        return list(self.engine.module.named_parameters())

    def weight_plan(self, bucket_bytes: int = BUCKET_BYTES) -> Plan:
        """Bucket plan over the full (unpartitioned) parameter shapes; ZeRO-3 keeps them in `ds_shape`."""
        return bucket_plan([(n, p.dtype, tuple(getattr(p, "ds_shape", p.shape))) for n, p in self._named_params()],
                           bucket_bytes)

    @contextmanager
    def _gathered(self, names: set[str]) -> Iterator[dict[str, torch.Tensor]]:
        """Full tensors of one bucket; under ZeRO-3 every rank must enter (all-gather)."""
        params = {n: p for n, p in self._named_params() if n in names}
        if getattr(self.engine, "zero_optimization_partition_weights", lambda: False)():
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(params.values()), modifier_rank=None):
                yield {n: p.data for n, p in params.items()}
        else:
            yield {n: p.data for n, p in params.items()}

    def _flat_buckets(self, plan: Plan, build: bool = True) -> Iterator[torch.Tensor | None]:
        """Each bucket as one flat tensor, gathered bucket by bucket under ZeRO-3 (every rank must iterate). A rank
        that sends nothing (`build=False`) joins the gathers but copies nothing and gets None."""
        for bucket in plan:
            with self._gathered({name for name, _, _ in bucket}) as full:
                yield torch.cat([full[name].reshape(-1) for name, _, _ in bucket]) if build else None

    def weight_group_address(self) -> tuple[str, int]:
        """A routable address for the weight group's store (engines may sit on other nodes)."""
        import ray

        from tdrm_rl.workers.base import free_port

        return ray.util.get_node_ip_address(), free_port()

    def init_weight_group(self, master_addr: str, master_port: int, world_size: int) -> int:
        """Rank 0 joins the NCCL weight group as its rank 0 (the vLLM workers take ranks 1..)."""
        if self.rank != 0:
            return -1
        from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
        from vllm.distributed.utils import StatelessProcessGroup

        group = StatelessProcessGroup.create(host=master_addr, port=master_port, rank=0, world_size=world_size)
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
        self._weight_comm = require_pynccl(PyNcclCommunicator(group, device=device),
                                           f"{self.role}: weight group (rank 0 of {world_size})")
        return 0

    def broadcast_weights(self, plan: Plan) -> int:
        """Every rank gathers (ZeRO-3); rank 0 broadcasts each flat bucket to the vLLM workers."""
        sent = 0
        if self.rank == 0:
            require_pynccl(getattr(self, "_weight_comm", None), f"{self.role}: broadcast_weights")
        for flat in self._flat_buckets(plan, build=self.rank == 0):
            if flat is not None:
                self._weight_comm.broadcast(flat, src=0, stream=torch.cuda.current_stream())
                torch.cuda.current_stream().synchronize()
                sent += 1
        return sent

    def ipc_weight_handles(self, plan: Plan) -> dict[str, list[Any]]:
        """CUDA IPC handles of this rank's flat buckets, keyed by its GPU's UUID (kept alive until released)."""
        from torch.multiprocessing.reductions import reduce_tensor

        self._ipc_buffers = [flat.contiguous() for flat in self._flat_buckets(plan)]
        torch.cuda.synchronize()
        uuid = str(torch.cuda.get_device_properties(torch.cuda.current_device()).uuid)
        return {uuid: [reduce_tensor(b) for b in self._ipc_buffers]}

    def release_ipc_buffers(self) -> None:
        """Drop the buckets the engines have loaded; ipc_collect frees the blocks their CUDA IPC handles pinned."""
        self._ipc_buffers = []
        torch.cuda.ipc_collect()
        torch.cuda.empty_cache()


class WeightSync:
    """The driver's side: set up the chosen path once, then `sync(version)` after every policy update."""

    def __init__(self, cfg: RunConfig, policy: Any, rollout: Any) -> None:
        self.policy, self.rollout = policy, rollout
        self.timeout = cfg.rollout.sync_timeout_s
        self.mode = resolve_weight_sync(cfg.rollout, cfg.cluster.colocate, cfg.cluster.uses_gpu)
        self.plan: Plan | None = None
        # reload: policy rank 0 writes the weights file and only its path travels, where every engine can open it
        self.file_on_node = (self.mode == "reload" and cfg.rollout.tensor_parallel_size == 1
                             and self._engines_on_policy_node())
        if self.mode in ("nccl", "ipc"):
            self.plan = policy.run_rank0("weight_plan", stage="weight_plan")
        if self.mode == "nccl":
            self._init_nccl(cfg.rollout.tensor_parallel_size)

    def _engines_on_policy_node(self) -> bool:
        node = self.policy.run_rank0("node_id", stage="weight_sync node")
        return all(n == node for n in self._get([a.node_id.remote() for a in self.rollout.actors], "node"))

    def _get(self, refs: Any, what: str) -> Any:
        return self.rollout.get(refs, stage=f"weight_sync[{self.mode}] {what}", timeout=self.timeout,
                                timeout_key="rollout.sync_timeout_s")

    def _collective(self, parts: list[tuple[Any, list[Any], str]]) -> list[list[Any]]:
        """Wait for both sides of one NCCL collective at once: [(group, refs by rank, what)] -> results by part.

        NCCL has no timeout: when a rank of one side dies, the other side blocks in the collective for good, and so
        does every later call queued on its actors (review F7). Waiting on one side first would sit out the deadline
        when the other side is the one that died. So the first death restarts the other side's group (a restart kills
        its actors) and is raised; the driver's recovery (RLTrainer.recover) restarts the dead side, builds a new
        WeightSync and, as the step's update already ran, goes back to the newest whole checkpoint. A sync that
        simply overruns is an error after rollout.sync_timeout_s, as before."""
        import ray

        from tdrm_rl.workers.group import LocalGroup, RoleError, WorkerDied

        if any(isinstance(group, LocalGroup) for group, _, _ in parts):  # in-process groups: refs are the results
            return [list(refs) for _, refs, _ in parts]
        pending = {ref: (k, rank) for k, (_, refs, _) in enumerate(parts) for rank, ref in enumerate(refs)}
        results: list[list[Any]] = [[None] * len(refs) for _, refs, _ in parts]
        deadline = time.monotonic() + self.timeout
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not done:
                late = ", ".join(sorted({f"{parts[k][0].who(r)} ({parts[k][2]})" for k, r in pending.values()}))
                raise RoleError(f"{late}: stage 'weight_sync[{self.mode}]' did not finish within {self.timeout:.0f} s "
                                f"(rollout.sync_timeout_s)")
            for ref in done:
                k, rank = pending.pop(ref)
                group, _, what = parts[k]
                try:
                    results[k][rank] = group._result(ref, f"weight_sync[{self.mode}] {what}", rank)
                except WorkerDied as died:
                    for other, _, _ in parts:
                        if other is not group:
                            self._restart_stuck_peer(other, died)
                    raise
        return results

    @staticmethod
    def _restart_stuck_peer(group: Any, died: Exception) -> None:
        logging.getLogger("tdrm_rl").warning("%s; restarting %s as well: its ranks are blocked in the NCCL weight "
                                             "broadcast with the dead one (NCCL has no timeout)", died, group.role)
        try:
            group.restart()
        except Exception as e:  # the recovery that follows meets the same problem and names it
            logging.getLogger("tdrm_rl").warning("restarting %s failed: %s", group.role, e)

    def _init_nccl(self, tp: int) -> None:
        addr, port = self.policy.run_rank0("weight_group_address", stage="weight_group_address")
        world = 1 + tp * len(self.rollout.actors)
        sender = [self.policy.actors[0].init_weight_group.remote(addr, port, world)]
        receivers = [a.init_weight_group.remote(addr, port, 1 + i * tp, world)
                     for i, a in enumerate(self.rollout.actors)]
        self._collective([(self.policy, sender, "init"), (self.rollout, receivers, "init")])  # a collective as well

    def sync(self, version: int) -> None:
        """Move policy weights into every rollout worker; each must report `version` back."""
        if self.file_on_node:
            path = self._get(self.policy.submit("write_weights_file"), "write")[0]
            try:
                versions = self._get([a.load_weights_file.remote(path, version) for a in self.rollout.actors], "load")
            finally:
                self._get(self.policy.actors[0].remove_weights_file.remote(path), "remove")
        elif self.mode in ("inprocess", "reload"):
            state_refs = self.policy.submit("export_state_dict")  # every rank: ZeRO-3 gathers
            versions = self._get([a.update_weights.remote(state_refs[0], version) for a in self.rollout.actors],
                                 "load")
            self._get(state_refs[1:], "export")
        elif self.mode == "nccl":
            send = self.policy.submit("broadcast_weights", self.plan)
            recv = [a.receive_weights_nccl.remote(self.plan, version) for a in self.rollout.actors]
            versions, _ = self._collective([(self.rollout, recv, "receive"), (self.policy, send, "broadcast")])
        else:  # ipc
            handles: dict[str, list[Any]] = {}
            for part in self._get(self.policy.submit("ipc_weight_handles", self.plan), "handles"):
                handles.update(part)
            versions = self._get([a.load_weights_ipc.remote(self.plan, handles, version)
                                  for a in self.rollout.actors], "load")
            self._get(self.policy.submit("release_ipc_buffers"), "release")
        if any(v != version for v in versions):
            raise WeightSyncError(f"rollout: weight sync ({self.mode}) left versions {versions}, expected {version}")
