#!/bin/bash
# The RL arms of reports/prm_advantages.md: `advantage_arms.sh NAME [overrides ...]` trains the default recipe with
# the overrides (150 steps), then measures the step-150 policy on the validation split of training problems.
# Run from the repository root; outputs under ${ARMS_DIR:-/tmp/arms}/NAME.
set -euo pipefail
name=$1; shift
out=${ARMS_DIR:-/tmp/arms}/$name
.venv/bin/tdrm-rl train recipes/grpo_tdrm.yaml trainer.output_dir="$out" trainer.eval_every=75 \
    trainer.eval_sampled=false "$@"
.venv/bin/python reports/scripts/val_split_eval.py "$out/checkpoints/step_000150/policy" 1000
