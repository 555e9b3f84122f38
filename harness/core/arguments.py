"""Command-line argument types: values are checked where they enter, so no computation starts
that cannot finish, and a bad value is one ``error:`` line (exit status 2)."""
from __future__ import annotations

import argparse
import math


class Parser(argparse.ArgumentParser):
    """argparse with the CLI's one-line error: ``error: vqbench train: argument ...`` and exit 2."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {' '.join(message.split())} (see {self.prog} --help)\n")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# The domain of a numeric value: (test, what the message says it must be). Command-line options
# (below) and the training configs' settings (harness.training.optim.check_settings) share them.
POSITIVE_INT = (lambda v: _is_int(v) and v >= 1, "a positive integer")
NON_NEGATIVE_INT = (lambda v: _is_int(v) and v >= 0, "a non-negative integer")
FINITE = (_is_real, "a finite number")
POSITIVE = (lambda v: _is_real(v) and v > 0, "a positive finite number")
NON_NEGATIVE = (lambda v: _is_real(v) and v >= 0, "a finite number >= 0")
PROBABILITY = (lambda v: _is_real(v) and 0 < v <= 1, "in (0, 1]")
DECAY = (lambda v: _is_real(v) and 0 <= v < 1, "in [0, 1)")
SEED = (lambda v: _is_int(v) and 0 <= v < 2 ** 32, "an integer in [0, 2^32)")


def argument_type(parse, rule):
    """An argparse ``type``: ``parse`` the text (int or float), then hold it to ``rule``, so option
    values are checked where they enter and no computation starts that cannot finish."""
    ok, must = rule

    def convert(text: str):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if parse is int else 'a number'}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {must}")
        return value
    convert.__name__ = must                     # what argparse names in "invalid ... value"
    return convert


positive_int = argument_type(int, POSITIVE_INT)
non_negative_int = argument_type(int, NON_NEGATIVE_INT)
finite_float = argument_type(float, FINITE)
positive_float = argument_type(float, POSITIVE)
non_negative_float = argument_type(float, NON_NEGATIVE)
probability = argument_type(float, PROBABILITY)
