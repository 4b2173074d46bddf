#!/bin/bash
# The warm-up size study of reports/prm_verify.md: offline TD-PRMs (n=2, 1 epoch, the recipe's PRM settings) on
# 500 / 1000 / 2000 training problems x 8, two seeds where cheap, gamma 0.95 and a lower head lr, all scored on a
# VALIDATION split of training problems (200 x 16, drawn with trainer.seed=31337; never the held-out problems).
# Run from the repository root; outputs under ${STUDY_DIR:-/tmp/warmup_study}. About 20 min on 2 cores.
set -euo pipefail
T=.venv/bin/tdrm-rl; R=recipes/grpo_tdrm.yaml; E=${STUDY_DIR:-/tmp/warmup_study}
mkdir -p "$E"
[ -s "$E/train2000.jsonl" ] || $T rollouts $R --out "$E/train2000.jsonl" --problems 2000 -n 8 --split train
[ -s "$E/val.jsonl" ] || $T rollouts $R trainer.seed=31337 --out "$E/val.jsonl" --problems 200 -n 16 --split train
for n in 500 1000; do  # the first n problems of the 2000
    .venv/bin/python -c "import json,sys; [sys.stdout.write(l) for l in open('$E/train2000.jsonl') if json.loads(l)['problem_id'] < $n]" > "$E/train$n.jsonl"
done
train() { name=$1; data=$2; shift 2
    [ -f "$E/runs/$name/prm/config.json" ] || $T prm-train $R trainer.torch_threads=1 "$@" --data "$E/$data" \
        --objective td --epochs 1 --out "$E/runs/$name" > "$E/$name.log" 2>&1; }
train td500 train500.jsonl & train td500_s1 train500.jsonl trainer.seed=1 & wait
train td1000 train1000.jsonl & train td1000_s1 train1000.jsonl trainer.seed=1 & wait
train td2000 train2000.jsonl & train td2000_lr5e5 train2000.jsonl prm.lr=5e-5 & wait
train td500_g95 train500.jsonl prm.gamma=0.95 & train td2000_g95 train2000.jsonl prm.gamma=0.95 & wait
args=()
for name in td500 td500_s1 td1000 td1000_s1 td2000 td2000_lr5e5 td500_g95 td2000_g95; do
    args+=(--prm "$name=$E/runs/$name/prm")
done
$T bon $R --data "$E/val.jsonl" "${args[@]}" --out "$E/bon_val"
