"""``latentgap train``: build an experiment config from a preset and flags, then train."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from latentgap.config import ExperimentConfig
from latentgap.errors import ConfigError
from latentgap.presets import PRESETS, deep_merge, set_path
from latentgap.train.rundir import nonempty_path


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number (finite), got {value}")
    return value


def nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number ≥ 0, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number ≥ 0, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 0, got {value}")
    return value


def seed_int(text: str) -> int:
    from latentgap.config import SEED_LIMIT

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"a seed must be in [0, 2**63), got {value}")
    return value


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model into a run directory")
    p.add_argument("--out", required=True, type=nonempty_path, help="run directory to write")
    p.add_argument("--preset", help="named experiment (see 'latentgap list presets')")
    p.add_argument("--model", help="model name (see 'latentgap list models'); default vae")
    p.add_argument(
        "--dataset",
        help="dataset name (see 'latentgap data list'), folder:PATH (PNG/JPEG images), "
        "npy:PATH (.npy/.npz arrays) or package.module:loader; default mnist",
    )
    p.add_argument(
        "--arch", help="network family: mlp, resnet, rae, or an own package.module:architecture"
    )
    p.add_argument("--latent-dim", type=positive_int)
    p.add_argument("--likelihood", help="bernoulli, gaussian or discretized-logistic")
    p.add_argument("--epochs", type=positive_int)
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--lr", type=positive_float)
    p.add_argument("--weight-decay", type=nonnegative_float)
    p.add_argument("--lr-halve-every", type=positive_int, metavar="EPOCHS")
    p.add_argument("--grad-clip", type=positive_float)
    p.add_argument("--seed", type=seed_int)
    p.add_argument("--device", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument(
        "--data-dir", help="dataset root (else $LATENTGAP_DATA, else ~/.cache/latentgap)"
    )
    p.add_argument("--limit-train", type=positive_int, help="use only the first N training images")
    p.add_argument("--limit-test", type=positive_int, help="use only the first N test images")
    p.add_argument("--log-every", type=positive_int, metavar="ITERS")
    p.add_argument("--sample-every", type=nonnegative_int, metavar="EPOCHS")
    p.add_argument("--checkpoint-every", type=positive_int, metavar="EPOCHS")
    p.add_argument("--tensorboard", action="store_true", help="also log to DIR/tensorboard")
    speed = p.add_argument_group("speed (all off by default; they pay off on GPUs)")
    speed.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        help="bf16: autocast the networks (log-densities and log Z stay fp32)",
    )
    speed.add_argument(
        "--compile",
        nargs="?",
        const="default",
        metavar="MODE",
        help="torch.compile the model (MODE: default, reduce-overhead for CUDA graphs, "
        "max-autotune)",
    )
    speed.add_argument(
        "--channels-last", action="store_true", help="conv nets and images in NHWC layout"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config field by dotted path, e.g. model_options.kl_weight=0.5 "
        "or data.options.binarize=false (VALUE parsed as JSON, else a string)",
    )
    p.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (own nets, models or datasets it registers); recorded in "
        "config.json so every later command imports it too",
    )
    p.add_argument(
        "--init-from",
        type=nonempty_path,
        metavar="EXPORT_OR_RUN",
        help="start from the weights of an export or run (fine-tuning; fresh optimisers)",
    )
    p.add_argument(
        "--logger",
        action="append",
        default=[],
        metavar="NAME",
        help="also log to tensorboard, mlflow or wandb (repeatable; optional extras)",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--force", action="store_true", help="overwrite an existing run in --out")
    p.set_defaults(func=run)


def set_dotted(values: dict[str, Any], assignment: str) -> None:
    if "=" not in assignment:
        raise ConfigError(f"--set needs KEY=VALUE, got {assignment!r}")
    key, raw = assignment.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    try:
        set_path(values, key, value)
    except ConfigError as err:
        raise ConfigError(f"--set {err}") from None


TRAIN_FLAGS = (
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "lr_halve_every",
    "grad_clip",
    "seed",
    "device",
    "log_every",
    "sample_every",
    "checkpoint_every",
    "precision",
    "compile",
)
# What a resumed run may change: how it trains, and for how long (train() keeps these).
RESUME_MAY_CHANGE = (
    "train.epochs",
    "train.device",
    "train.progress",
    "train.precision",
    "train.compile",
    "train.channels_last",
)


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """Defaults, then the preset, then explicit flags, then ``--set`` assignments."""
    values = ExperimentConfig().to_dict()
    if args.preset:
        values = deep_merge(values, PRESETS.get(args.preset).values)
        values["preset"] = args.preset
    if args.model and args.model != values["model"]:
        values["model"] = args.model
        if not args.preset:  # a preset's options carry over (e.g. --model vaepp-naive)
            values["model_options"] = {}
    if args.dataset and args.dataset != values["data"]["name"]:
        values["data"] = {**values["data"], "name": args.dataset, "options": {}}
    model_flags = {"arch": args.arch, "latent_dim": args.latent_dim, "likelihood": args.likelihood}
    values["model_options"].update({k: v for k, v in model_flags.items() if v is not None})
    data_flags = {"limit_train": args.limit_train, "limit_test": args.limit_test}
    values["data"].update({k: v for k, v in data_flags.items() if v is not None})
    train_flags = {name: getattr(args, name) for name in TRAIN_FLAGS}
    values["train"].update({k: v for k, v in train_flags.items() if v is not None})
    if args.tensorboard:
        values["train"]["tensorboard"] = True
    if args.no_progress:
        values["train"]["progress"] = False
    if args.channels_last:
        values["train"]["channels_last"] = True
    imports = [*(getattr(args, "global_imports", None) or []), *getattr(args, "imports", [])]
    if imports:
        values["imports"] = list(dict.fromkeys([*values.get("imports", []), *imports]))
    if getattr(args, "init_from", None):
        values["init_from"] = str(Path(args.init_from).resolve())
    loggers = [n.strip() for spec in getattr(args, "logger", []) for n in spec.split(",")]
    if loggers:
        values["train"]["loggers"] = list(dict.fromkeys(n for n in loggers if n))
    for assignment in args.set:
        set_dotted(values, assignment)
    from latentgap.plugins import import_modules

    import_modules(values.get("imports", []))  # own names must resolve before validation
    return ExperimentConfig.from_dict(values)


def explicit_settings(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(dotted config path, the flag that set it) for every setting given on the command line."""
    given: list[tuple[str, str]] = []
    if args.preset:
        given.append(("preset", f"--preset {args.preset}"))
    if args.model:
        given.append(("model", f"--model {args.model}"))
    if args.dataset:
        given.append(("data.name", f"--dataset {args.dataset}"))
    for name in ("arch", "latent_dim", "likelihood"):
        if getattr(args, name) is not None:
            given.append((f"model_options.{name}", f"--{name.replace('_', '-')}"))
    for name in ("limit_train", "limit_test"):
        if getattr(args, name) is not None:
            given.append((f"data.{name}", f"--{name.replace('_', '-')}"))
    for name in TRAIN_FLAGS:
        if getattr(args, name) is not None:
            given.append((f"train.{name}", f"--{name.replace('_', '-')}"))
    if args.tensorboard:
        given.append(("train.tensorboard", "--tensorboard"))
    for assignment in args.set:
        given.append((assignment.split("=", 1)[0], f"--set {assignment}"))
    return given


def _at(values: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(values, dict) or part not in values:
            return "(unset)"
        values = values[part]
    return values


def check_resume_flags(args: argparse.Namespace, config: ExperimentConfig) -> None:
    """ConfigError if flags given with ``--resume`` disagree with the run's saved config (a
    resumed run keeps it, except for the settings of :data:`RESUME_MAY_CHANGE`)."""
    from latentgap.errors import LatentgapError
    from latentgap.train.checkpoint import load_checkpoint

    try:
        saved = ExperimentConfig.load(args.out / "config.json").to_dict()
    except LatentgapError:
        try:  # config.json damaged: resuming uses the checkpoint's copy anyway
            saved = ExperimentConfig.from_dict(
                load_checkpoint(args.out / "checkpoint.pt")["config"]
            ).to_dict()
        except (LatentgapError, KeyError, TypeError):
            return  # train() reports the missing or damaged run
    fresh = config.to_dict()
    conflicts = [
        f"{flag} (the run has {path}={json.dumps(_at(saved, path))})"
        for path, flag in explicit_settings(args)
        if path not in RESUME_MAY_CHANGE and _at(fresh, path) != _at(saved, path)
    ]
    if conflicts:
        raise ConfigError(
            f"--resume continues {args.out} with its saved config, which these flags contradict: "
            f"{'; '.join(conflicts)}; drop them (a resumed run may change only --epochs, "
            "--device, --precision, --compile, --channels-last, --no-progress), or start a new "
            "run with another --out"
        )


def validate_names(config: ExperimentConfig) -> None:
    """Fail on unknown model/dataset/architecture before any data is read."""
    from latentgap.config import dataclass_from_dict
    from latentgap.data import check_dataset_name
    from latentgap.models import MODELS
    from latentgap.nets import ARCHITECTURES

    model_cls = MODELS.get(config.model)
    dataclass_from_dict(
        model_cls.config_class, config.model_options, where=f"model {config.model!r}"
    )
    check_dataset_name(config.data.name)
    arch = config.model_options.get("arch")
    if arch is not None:
        ARCHITECTURES.get(arch)


def command_of(args: argparse.Namespace) -> str | None:
    """The command line that produced ``args`` (set by :func:`latentgap.cli.main.main`)."""
    from latentgap.train.provenance import command_line

    argv = getattr(args, "argv", None)
    return None if argv is None else command_line(argv)


def run(args: argparse.Namespace) -> int:
    from latentgap.distributed import process_group_scope
    from latentgap.train.run import train

    config = config_from_args(args)
    validate_names(config)
    if args.resume:
        check_resume_flags(args, config)
    with process_group_scope():
        result = train(
            config,
            args.out,
            resume=args.resume,
            force=args.force,
            data_dir=args.data_dir,
            command=command_of(args),
        )
    if not result.is_main:
        return 0
    summary = {
        k: v
        for k, v in result.record.items()
        if k in ("epoch", "iteration", "images_per_s") or k.startswith("test_")
    }
    summary["out"] = str(args.out)
    print(json.dumps(summary))
    return 0
