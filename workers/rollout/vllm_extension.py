"""Weight-sync methods mixed into every vLLM worker process (`LLM(worker_extension_cls=...)`).

The rollout actor reaches them with `LLM.collective_rpc("tdrm_...")`; vLLM runs each method on
every worker of the engine (one per tensor-parallel rank), where `self` is vLLM's Worker.
All three paths end in vLLM's in-place `reload_weights`, which takes checkpoint-format (HF)
names and handles the model's own layout (fused qkv / gate-up, CPU weight repacking).

  reload : the weights arrive as one safetensors file in shared memory whose path goes through collective_rpc
           (an engine whose workers all run on the actor's node), else as one safetensors blob through it.
  nccl   : trainer rank 0 broadcasts flat buckets over a NCCL group made with vLLM's
           StatelessProcessGroup + PyNcclCommunicator; the blob-free data plane for separate GPUs.
  ipc    : CUDA IPC handles of the trainer's flat buckets on the same GPU (colocated roles).
"""

from __future__ import annotations

from typing import Any, Iterator

import torch

# A bucket plan: [[(name, dtype_name, shape), ...], ...]; every bucket holds one dtype.
Plan = list[list[tuple[str, str, tuple[int, ...]]]]


def unflatten_bucket(flat: torch.Tensor,
                     bucket: list[tuple[str, str, tuple[int, ...]]]) -> Iterator[tuple[str, torch.Tensor]]:
    """Split one flat bucket back into named tensors (views, no copy)."""
    offset = 0
    for name, _, shape in bucket:
        numel = 1
        for d in shape:
            numel *= d
        yield name, flat[offset:offset + numel].view(shape)
        offset += numel


def rebuild_ipc_tensor(handle: tuple[Any, tuple], device_index: int) -> torch.Tensor:
    """Open a CUDA IPC handle from `torch.multiprocessing.reductions.reduce_tensor` on our own device ordinal
    (the handle carries the sender's, which differs when each process sees its GPU as a different index)."""
    rebuild, args = handle
    args = list(args)
    args[6] = device_index  # rebuild_cuda_tensor's storage_device
    return rebuild(*args)


class WeightSyncExtension:
    """Mixed into vLLM's Worker; `self.reload_weights` and `self.device` come from it."""

    def tdrm_load_weights(self, blob: bytes) -> int:
        """`reload` path: a safetensors blob of the full state dict."""
        from safetensors.torch import load

        state = load(blob)
        self.reload_weights(weights_iterator=iter(state.items()), is_checkpoint_format=True)
        return len(state)

    def tdrm_load_weights_file(self, path: str) -> int:
        """`reload` path on one node: the safetensors file the rollout actor wrote (it deletes the file after)."""
        from safetensors.torch import load_file

        state = load_file(path)
        self.reload_weights(weights_iterator=iter(state.items()), is_checkpoint_format=True)
        return len(state)

    # ----- nccl -----------------------------------------------------------------------------------
    def tdrm_init_weight_group(self, master_addr: str, master_port: int, rank_offset: int, world_size: int) -> int:
        """Join the trainer's NCCL group: rank = rank_offset + this worker's tensor-parallel rank."""
        from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
        from vllm.distributed.parallel_state import get_tp_group
        from vllm.distributed.utils import StatelessProcessGroup

        from tdrm_rl.workers.weight_sync import require_pynccl

        rank = rank_offset + get_tp_group().rank_in_group
        group = StatelessProcessGroup.create(host=master_addr, port=master_port, rank=rank, world_size=world_size)
        self._tdrm_comm = require_pynccl(PyNcclCommunicator(group, device=self.device),
                                         f"rollout engine: weight group (rank {rank} of {world_size})")
        return rank

    def tdrm_receive_broadcast(self, plan: Plan) -> int:
        """Receive every bucket from group rank 0, streaming each into vLLM's reload as it lands."""
        from tdrm_rl.workers.weight_sync import require_pynccl

        comm = require_pynccl(getattr(self, "_tdrm_comm", None), "rollout engine: tdrm_receive_broadcast")

        def weights() -> Iterator[tuple[str, torch.Tensor]]:
            for bucket in plan:
                dtype = getattr(torch, bucket[0][1])
                numel = sum(int(torch.Size(shape).numel()) for _, _, shape in bucket)
                flat = torch.empty(numel, dtype=dtype, device=self.device)
                comm.broadcast(flat, src=0, stream=torch.cuda.current_stream())
                torch.cuda.current_stream().synchronize()
                yield from unflatten_bucket(flat, bucket)

        self.reload_weights(weights_iterator=weights(), is_checkpoint_format=True)
        return sum(len(b) for b in plan)

    # ----- ipc ------------------------------------------------------------------------------------
    def tdrm_device_uuid(self) -> str:
        return str(torch.cuda.get_device_properties(self.device).uuid)

    def tdrm_load_ipc(self, plan: Plan, handles: dict[str, list[Any]]) -> int:
        """Rebuild the trainer's buckets from the CUDA IPC handles made on this worker's GPU."""
        uuid = self.tdrm_device_uuid()
        if uuid not in handles:
            raise RuntimeError(f"weight sync (ipc): no trainer rank shares this engine's GPU {uuid}; colocate "
                               f"needs policy.world_size >= rollout.num_workers")
        mine = handles[uuid]

        def weights() -> Iterator[tuple[str, torch.Tensor]]:
            for bucket, handle in zip(plan, mine):
                yield from unflatten_bucket(rebuild_ipc_tensor(handle, self.device.index), bucket)

        self.reload_weights(weights_iterator=weights(), is_checkpoint_format=True)
        torch.cuda.synchronize(self.device)
        torch.cuda.ipc_collect()  # close the trainer's handles now, so its release frees the buckets at once
        return sum(len(b) for b in plan)
