"""Greedy / sampled / pass@8 accuracy of a policy checkpoint on a VALIDATION split of training problems
(training-bucket problems drawn with a seed no run uses), for choosing settings without held-out problems."""
import json, random, sys
import torch
from tdrm_rl.config.load import load_config
from tdrm_rl.prm_tools.offline import local_rollout_worker
from tdrm_rl.tasks import get_task

ckpt, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 500
cfg = load_config("recipes/grpo_tdrm.yaml")  # run from the repository root
task = get_task(cfg.data)
problems = task.sample_train(n, random.Random("validation-split-2026"))
torch.manual_seed(0)
w = local_rollout_worker(cfg, ckpt)
prompts = [p.prompt for p in problems]; answers = [p.answer for p in problems]
g = w.generate(prompts, 1, {"temperature": 0.0})
greedy = sum(task.verify(t, a) for t, a in zip(g.response_text, answers)) / n
s = w.generate(prompts[:200], 8, {"temperature": 1.0})
ok = [task.verify(t, answers[j // 8]) for j, t in enumerate(s.response_text)]
sampled = sum(ok) / len(ok)
pass8 = sum(any(ok[i*8:(i+1)*8]) for i in range(200)) / 200
out = {"ckpt": ckpt, "val_greedy": greedy, "val_sampled": sampled, "val_pass@8": pass8}
print(json.dumps(out))
