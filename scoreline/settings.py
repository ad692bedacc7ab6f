"""Where a command finds Kafka, the rules, the models and the facts: flags, then environment, then defaults.

The defaults are the example configuration shipped inside the package (``scoreline/examples``),
so a plain install runs from any directory. A configuration that is missing or broken is a
:class:`ConfigError`: one line naming the path and the fault, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
from pathlib import Path

from routing import Rules, load_rules, parse_rules
from schemas.errors import ScorelineError
from scoreline.output import progress
from streams.broker.config import scoreline_home
from streams.broker.local import LocalBroker
from streams.topics import TopicLayout
from streams.transport.settings import KafkaSettings
from workflows import InMemoryFactStore, ModelRegistry
from workflows.registry import EXAMPLES_DIR, FACTS_DIR_ENV, MODELS_DIR_ENV, default_facts_dir, default_models_dir

__all__ = ["ConfigError", "EXAMPLES_DIR", "add_config_arguments", "add_connection_arguments", "facts_dir",
           "kafka_settings", "layout", "load_example_rules", "model_cache_dir", "model_registry", "models_dir",
           "reference_dir", "reference_models",
           "resolve_bootstrap"]

DEFAULT_PREFIX = "scoreline."


class ConfigError(ScorelineError):
    """A configuration path (rules, models, facts) is missing or broken; the message names it and why."""

    code = "invalid_config"


def add_connection_arguments(parser: argparse.ArgumentParser, *, rules: bool = True) -> None:
    """The flags every command that talks to Kafka shares."""
    parser.add_argument("--bootstrap", default=None,
                        help="Kafka bootstrap servers (default: SCORELINE_BOOTSTRAP, else the local broker, "
                             "started on demand)")
    parser.add_argument("--prefix", default=os.environ.get("SCORELINE_TOPIC_PREFIX", DEFAULT_PREFIX),
                        help="topic name prefix (default scoreline.)")
    if rules:
        parser.add_argument("--rules", default=os.environ.get("SCORELINE_RULES"),
                            help="routing rules file (default: SCORELINE_RULES, else the shipped example rules)")


def add_config_arguments(parser: argparse.ArgumentParser, *, facts: bool = True, serving: bool = True) -> None:
    """``--models-dir`` (and ``--facts-dir``): where the model packages (and fact files) are; for commands that
    serve, ``--model-memory-budget`` too."""
    parser.add_argument("--models-dir", default=None,
                        help=f"model packages, one <name>@<version>/ each (default: {MODELS_DIR_ENV}, "
                             "else the shipped example models)")
    if facts:
        parser.add_argument("--facts-dir", default=None,
                            help=f"fact files (default: {FACTS_DIR_ENV}, else the shipped example facts)")
    if not serving:
        return
    parser.add_argument("--model-memory-budget", default=os.environ.get("SCORELINE_MODEL_MEMORY_BUDGET", "2GiB"),
                        help="bytes the loaded models of this process may hold, e.g. 512MiB; the least recently "
                             "used are evicted past it (default: SCORELINE_MODEL_MEMORY_BUDGET, else 2GiB)")


def models_dir(args: argparse.Namespace) -> Path:
    """``--models-dir``, then ``SCORELINE_MODELS_DIR``, then the shipped examples; it must be a directory."""
    path = Path(getattr(args, "models_dir", None) or default_models_dir())
    if not path.is_dir():
        raise ConfigError(f"models directory {path}: not a directory")
    return path


def facts_dir(args: argparse.Namespace) -> Path:
    """``--facts-dir``, then ``SCORELINE_FACTS_DIR``, then the shipped examples; it must be a directory."""
    path = Path(getattr(args, "facts_dir", None) or default_facts_dir())
    if not path.is_dir():
        raise ConfigError(f"facts directory {path}: not a directory")
    return path


def model_cache_dir() -> Path:
    """Where workers keep packages pulled from the model repository topic (under ``SCORELINE_HOME``)."""
    return scoreline_home() / "model-cache"


def reference_dir() -> Path:
    """Where ``scoreline models reference`` builds the reference models (under ``SCORELINE_HOME``, per build)."""
    from workflows.training.reference import BUILD

    return scoreline_home() / "reference" / f"build-{BUILD}"


def reference_models(out: Path | None = None, *, rebuild: bool = False) -> Path:
    """The reference models' directory (``models/`` and ``rules.json``), built first if it is not there yet.

    Building needs the ``train`` extra; without it this is a ``ConfigError`` that says how to install it.
    """
    from workflows.training.reference import build

    out = out or reference_dir()
    done = out / ".built"
    if done.is_file() and not rebuild:
        return out
    missing = [name for name in ("sklearn", "onnx") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"building the reference models needs {' and '.join(missing)} (the train extra): "
                          "pip install 'scoreline[train]'")
    progress(f"building the reference models in {out} (about 10 s, once) ...")
    build(out, progress=lambda line: progress(f"  {line}"))
    done.write_text("complete\n", encoding="utf-8")
    return out


def parse_bytes(text: str) -> int:
    """``512MiB``, ``2GiB``, ``1.5GB`` or a plain number of bytes; ``ConfigError`` otherwise."""
    units = {"kib": 2**10, "mib": 2**20, "gib": 2**30, "kb": 10**3, "mb": 10**6, "gb": 10**9, "b": 1, "": 1}
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", text)
    if match is None or match.group(2).lower() not in units:
        raise ConfigError(f"memory size {text!r}: give bytes, or a number with KiB, MiB, GiB (or KB, MB, GB)")
    return int(float(match.group(1)) * units[match.group(2).lower()])


def model_registry(args: argparse.Namespace) -> ModelRegistry:
    """The models and facts the command's flags name, facts loaded (a broken fact file is a ``ConfigError``)."""
    directory = facts_dir(args)
    try:
        facts = InMemoryFactStore.from_dir(directory)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"facts directory {directory}: {type(exc).__name__}: {exc}") from exc
    budget = getattr(args, "model_memory_budget", None)
    return ModelRegistry(models_dir(args), facts, memory_budget=parse_bytes(budget) if budget else None)


def resolve_bootstrap(args: argparse.Namespace) -> str:
    """``--bootstrap``, then ``SCORELINE_BOOTSTRAP``, then the local broker (started if it is not running)."""
    if getattr(args, "bootstrap", None):
        return args.bootstrap
    if env := os.environ.get("SCORELINE_BOOTSTRAP"):
        return env
    return LocalBroker().start(progress=progress).bootstrap


def kafka_settings(args: argparse.Namespace) -> KafkaSettings:
    """Client settings for the resolved cluster."""
    return KafkaSettings.from_env(resolve_bootstrap(args))


def layout(args: argparse.Namespace) -> TopicLayout:
    """Topic names and partition counts (``SCORELINE_*_PARTITIONS``, ``SCORELINE_REPLICATION_FACTOR``)."""
    env = os.environ.get
    return TopicLayout(
        prefix=args.prefix,
        request_partitions=int(env("SCORELINE_REQUEST_PARTITIONS", "4")),
        shard_partitions=int(env("SCORELINE_SHARD_PARTITIONS", "4")),
        reply_partitions=int(env("SCORELINE_REPLY_PARTITIONS", "4")),
        replication_factor=int(env("SCORELINE_REPLICATION_FACTOR") or 0) or None,  # unset: follow the cluster
    )


def load_example_rules(args: argparse.Namespace) -> Rules:
    """The rules file named by ``--rules`` / ``SCORELINE_RULES``, else the shipped example.

    The shipped example names its reply topics under the default ``scoreline.`` prefix; with
    another ``--prefix`` they move under it, so the example works on any prefix. A file of
    your own is taken as written.
    """
    if path := getattr(args, "rules", None):
        try:
            return load_rules(path)
        except OSError as exc:
            raise ConfigError(f"rules file {path}: {exc.strerror or exc}") from exc
    prefix = getattr(args, "prefix", DEFAULT_PREFIX)
    text = (EXAMPLES_DIR / "rules.json").read_text()
    if prefix != DEFAULT_PREFIX:
        text = text.replace(f'"{DEFAULT_PREFIX}replies.', f'"{prefix}replies.')
    return parse_rules(json.loads(text))
