"""What every role shares: its rank and world, CPU defaults, torch.distributed set-up, timing."""

from __future__ import annotations

import logging
import os
import resource
import socket
import time
from contextlib import contextmanager

import torch

from tdrm_rl.config import RunConfig
from tdrm_rl.models.load import set_cpu_defaults


def quiet_libraries() -> None:
    """Actors print with a role prefix; keep library chatter (load reports, shard bars) out of it."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)


def routable_node_ip() -> str:
    """This node's IP as Ray knows it (what its other nodes reach it by); outside Ray, the local address Ray would
    pick (ray.util.get_node_ip_address works without a running instance)."""
    import ray

    return ray.util.get_node_ip_address()


def free_port() -> int:
    """A port free on every interface of this node, as the rendezvous store will bind it (on all interfaces).

    Asking on loopback alone (as before) could return a port another process holds on the node's routable
    address. The port is released before the store binds it: another process may take it in that moment, and the
    store's bind then fails with 'address already in use', bounded, naming the stage (review F18)."""
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class BaseWorker:
    """A role's process. Plain Python: tests may build one in-process; Ray wraps it as an actor."""

    role = "worker"

    def __init__(self, cfg: RunConfig, rank: int = 0, world_size: int = 1, num_threads: int = 0) -> None:
        self.cfg = cfg
        self.rank = rank
        self.world_size = world_size
        set_cpu_defaults(num_threads)
        quiet_libraries()
        torch.manual_seed(cfg.trainer.seed + rank)
        self.log = logging.getLogger(f"tdrm_rl.{self.role}[{rank}]")
        self.timings: dict[str, float] = {}

    def node_address(self) -> tuple[str, int]:
        """Rank 0 hands out the rendezvous address for the group's process group: Ray's own address for this node
        (routable from every node of the cluster), not gethostbyname(gethostname()), which is often 127.0.1.1
        (Ubuntu's /etc/hosts, Docker --network host) and then a group spanning nodes never meets."""
        return ("127.0.0.1" if self.world_size == 1 else routable_node_ip()), free_port()

    def node_id(self) -> str:
        """The Ray node this worker runs on ("local" outside Ray: an in-process worker shares the driver's node)."""
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"

    def setup_distributed(self, master_addr: str, master_port: int) -> None:
        """torch.distributed over the group: gloo on CPU, NCCL on GPU (DeepSpeed picks the backend)."""
        import deepspeed

        os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port), RANK=str(self.rank),
                          WORLD_SIZE=str(self.world_size), LOCAL_RANK="0")
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if not torch.cuda.is_available():
            # DeepSpeed JIT-builds a shared-memory all-reduce op for CPU (~60 s on first use). Only its
            # inference all-reduce (tensor-parallel inference) uses it; training collectives go through
            # torch.distributed (gloo) either way, so mark the op unavailable at every world size.
            import deepspeed.ops

            deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False)

    def use_threads(self, threads: int) -> None:
        """Torch threads for the calls that follow (0: keep). The driver sizes them per stage
        (`tdrm_rl.rl.cores.CoreShare`); an actor runs one caller's calls in order, so they apply to that stage."""
        if threads > 0 and threads != torch.get_num_threads():
            torch.set_num_threads(threads)

    @contextmanager
    def timed(self, name: str):
        """Seconds spent in the block, added to `timings[name]` until the next `pop_timings`."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start

    def pop_timings(self) -> dict[str, float]:
        """The timings since the last pop (update calls return theirs with their metrics; the driver pops the
        rest at the end of every step)."""
        out, self.timings = self.timings, {}
        return out

    def rng_state(self) -> dict:
        """Every RNG this process draws from (a checkpoint restores sampling exactly)."""
        from tdrm_rl.rl.checkpoint import capture_rng

        return capture_rng()

    def set_rng_state(self, state: dict) -> None:
        from tdrm_rl.rl.checkpoint import restore_rng

        restore_rng(state)

    def ready(self) -> bool:
        """The group's first call (stage 'start'): this node must hold the role's model before any role loads one.

        Every actor resolves a hub id in its own node's HF cache (offline by default, tdrm_rl/cli/runtime.py), so a
        node without it fails here at once, naming the node, not minutes later in one role's setup (review F13)."""
        path = getattr(self, "model_path", None)
        if path:
            from tdrm_rl.models.load import resolve_model_path

            try:
                resolve_model_path(path, self.role)
            except FileNotFoundError as e:
                raise FileNotFoundError(f"node {routable_node_ip()}: {e}") from None
        return True

    def pid(self) -> int:
        return os.getpid()

    def peak_rss_mb(self) -> float:
        """This role's peak resident memory so far (the benchmark's per-role memory table)."""
        return peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident set size of the calling process in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
