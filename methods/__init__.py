"""Training methods behind one registry: ``train.py --method NAME`` plus that method's flags.

Add a method: write ``methods/my_method.py`` with a :class:`Method` subclass (its flags, its
training step, its formula and paper in the docstring) and add it to ``_REGISTERED`` below
(or decorate it with ``@register_method`` outside this package). ``python train.py --method NAME --help`` lists its flags.
"""
from __future__ import annotations

import argparse
from typing import Iterable, Sequence

from data.label_modes import SOFT_MODES
from losses.class_prior import ClassPrior
from utils.registry import Registry

from .balanced_softmax import BalancedSoftmax
from .base import Method, MethodArgumentError, TrainSchedule
from .ce import CrossEntropy
from .dan import DAN
from .eac import EAC
from .face2exp import Face2Exp
from .focal import Focal
from .ldam import LDAM
from .logit_adjust import LogitAdjust
from .mek import MEK
from .rul import RUL

_REGISTERED: tuple[type[Method], ...] = (MEK, CrossEntropy, EAC, Focal, LDAM, BalancedSoftmax, LogitAdjust, RUL, DAN,
                                           Face2Exp)
METHODS: Registry[type[Method]] = Registry("method", error=MethodArgumentError)
DEFAULT_METHOD = "mek"  # train.py's --method default
for _cls in _REGISTERED:
    METHODS.add(_cls.name, _cls)


def register_method(cls: type[Method]) -> type[Method]:
    """Register a method class defined outside this package (a decorator)."""
    return METHODS.add(cls.name, cls)


def get_method_class(name: str) -> type[Method]:
    return METHODS.lookup(name)


def method_head(args: argparse.Namespace) -> str:
    """The head of the run: ``--head``, or the method's own."""
    return getattr(args, "head", None) or get_method_class(args.method).head


def check_method_args(args: argparse.Namespace) -> None:
    """The method's own checks, then whether its head fits it: a head it allows, and class
    attention maps for an attention term that is switched on (``attention_flag``)."""
    from models import HEADS

    cls = get_method_class(args.method)
    cls.check_args(args)
    labels = getattr(args, "ferplus_labels", "majority")
    if labels in SOFT_MODES and not cls.takes_target_distributions:
        raise MethodArgumentError(f"--ferplus-labels {labels} trains on target distributions, which only --method ce takes; "
                                  f"--method {args.method} needs class labels (majority or draw)")
    head = method_head(args)
    if cls.allowed_heads is not None and head not in cls.allowed_heads:
        raise MethodArgumentError(f"--method {args.method} cannot use --head {head}; it needs "
                                  f"{' or '.join(cls.allowed_heads)}")
    flag = getattr(cls, "attention_flag", None)
    if flag and getattr(args, flag.lstrip("-").replace("-", "_"), 0) and not getattr(HEADS[head], "gives_maps", True):
        raise MethodArgumentError(f"{flag} needs class attention maps, and --head {head} gives none "
                                  "(use --head cam or norm-linear, or set it to 0)")


def add_method_args(parser: argparse.ArgumentParser, name: str) -> None:
    """Add method ``name``'s flags to ``parser`` as one argument group."""
    cls = get_method_class(name)
    cls.add_args(parser.add_argument_group(f"method {name} ({cls.paper})"))


def method_options(name: str) -> set[str]:
    parser = argparse.ArgumentParser(add_help=False)
    add_method_args(parser, name)
    return {option for action in parser._actions for option in action.option_strings}


def check_foreign_flags(argv: Sequence[str], method: str) -> None:
    """Refuse a flag that belongs to another method, naming the method(s) it belongs to."""
    own = method_options(method)
    owners: dict[str, list[str]] = {}
    for other in METHODS:
        if other != method:
            for option in method_options(other) - own:
                owners.setdefault(option, []).append(other)
    for token in argv:
        option = token.split("=", 1)[0]
        if option in owners:
            raise MethodArgumentError(
                f"{option} belongs to --method {' / '.join(sorted(owners[option]))}, not to --method {method}")


def method_defaults(name: str) -> dict:
    """The default value of each of method ``name``'s flags."""
    parser = argparse.ArgumentParser(add_help=False)
    add_method_args(parser, name)
    return vars(parser.parse_args([]))


def build_method(name: str, args: argparse.Namespace, prior: ClassPrior, schedule: TrainSchedule) -> Method:
    cls = get_method_class(name)
    cls.check_args(args)
    return cls(args, prior, schedule)


def method_from_config(config: dict, counts: Iterable[int] | None = None) -> Method:
    """Rebuild the method a run's ``config.json`` / checkpoint config describes (for test.py).

    Flags missing from an older config take their defaults; checkpoints from before the
    method seam are MEK's.
    """
    name = config.get("method", "mek")
    args = argparse.Namespace(**{"flip_forward": "two-pass", **method_defaults(name), **config})
    counts = list(counts if counts is not None else config["train_counts"])
    prior = ClassPrior.from_counts(counts, config.get("classes"))
    steps_per_epoch = int(config.get("steps_per_epoch", 1))
    schedule = TrainSchedule(steps_per_epoch, int(config.get("total_steps", steps_per_epoch)))
    return build_method(name, args, prior, schedule)


def make_method(name: str, counts: Sequence[int], steps_per_epoch: int = 1, total_steps: int = 1,
                flip_forward: str = "two-pass", ferplus_labels: str = "majority", **flags) -> Method:
    """A method with its default flags except ``flags`` (for tests, benchmarks and notebooks);
    ``ferplus_labels`` is the data's label mode (``--ferplus-labels``)."""
    values = method_defaults(name)
    unknown = set(flags) - set(values)
    if unknown:
        raise MethodArgumentError(f"method {name} has no flag(s) {', '.join(sorted(unknown))}")
    args = argparse.Namespace(**{**values, **flags}, flip_forward=flip_forward, ferplus_labels=ferplus_labels)
    return build_method(name, args, ClassPrior.from_counts(counts), TrainSchedule(steps_per_epoch, total_steps))


__all__ = [
    "DEFAULT_METHOD",
    "METHODS",
    "Method",
    "MethodArgumentError",
    "TrainSchedule",
    "add_method_args",
    "check_method_args",
    "method_head",
    "build_method",
    "check_foreign_flags",
    "get_method_class",
    "make_method",
    "method_defaults",
    "method_from_config",
    "register_method",
]
