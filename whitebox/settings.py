"""Settings with their checks: what a training config and every task's options are made of.

Every setting is a dataclass field made with :func:`setting`, which carries
its help text and its :class:`Check`. The same check validates a value set
in Python and a flag typed on the command line (``Check.parse``, where the
message names the flag), so a bad number is refused before any work starts.
The training loop's shared settings (:mod:`whitebox.training.config`) and
each task's own (:mod:`whitebox.tasks`) are built from these.
"""
import argparse
import dataclasses
import math

import numpy as np


class Check:
    """A check of one setting: ``check(name, value)`` returns the value or raises ValueError."""

    def __init__(self, kind, low=None, high=None, high_open=False, choices=None,
                 optional=False):
        self.kind, self.low, self.high, self.high_open = kind, low, high, high_open
        self.choices, self.optional = choices, optional

    def expected(self):
        if self.choices is not None:
            return f"one of {', '.join(map(str, self.choices))}"
        if self.kind is bool:
            return "true or false"
        if self.kind is str:
            return "a path or name"
        what = "an integer" if self.kind is int else "a finite number"
        if self.high is not None:
            return f"{what} in [{self.low}, {self.high}{')' if self.high_open else ']'}"
        return what if self.low is None else f"{what} >= {self.low}"

    def __call__(self, name, value):
        if value is None and self.optional:
            return None
        ok = True
        if self.choices is not None:
            ok = value in self.choices
        elif self.kind is bool:
            ok = isinstance(value, bool)
        elif self.kind is str:
            ok = isinstance(value, str) and value != ""
        elif self.kind is int:
            ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, (int, float, np.integer, np.floating)) \
                and not isinstance(value, bool) and math.isfinite(value)
        if ok and self.low is not None:
            ok = value >= self.low
        if ok and self.high is not None:
            ok = value < self.high if self.high_open else value <= self.high
        if not ok:
            raise ValueError(f"{name} must be {self.expected()}, got {value!r}")
        return int(value) if self.kind is int else value

    def parse(self, flag):
        """An argparse ``type``: text -> checked value; argparse names the flag in the error."""
        def convert(text):
            try:
                value = self.kind(text) if self.kind in (int, float) else text
                return self(flag, value)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"must be {self.expected()}, got {text!r}") from None
        convert.__name__ = self.kind.__name__ if self.choices is None else "choice"
        return convert


POSITIVE_INT = Check(int, low=1)
COUNT = Check(int, low=0)
NONNEG = Check(float, low=0)
POSITIVE = Check(float, low=1e-300)
OPTIONAL_POSITIVE = Check(float, low=1e-300, optional=True)
PROBABILITY = Check(float, low=0, high=1, high_open=True)


def setting(default, help, check, flag=True):
    """A dataclass field that carries its help text and its check (and a command-line flag)."""
    return dataclasses.field(default=default,
                             metadata={"help": help, "check": check, "flag": flag})


def check_settings(obj, prefix=""):
    """Run every field's check on a dataclass instance; returns it (values normalised)."""
    for f in dataclasses.fields(obj):
        check = f.metadata.get("check")
        if check is not None:
            setattr(obj, f.name, check(prefix + f.name, getattr(obj, f.name)))
    return obj
