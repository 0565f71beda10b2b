"""The knobs of `dlrm-prep synth`'s planted click model: what popularity looks like and where the signal is.

A recipe chosen on one synthetic data set overfits it (issue 10): which optimizer and rate win depends on
whether the signal sits in many rare values (the embedding rate decides), in crosses of two columns (the
interaction and the MLPs decide) or in the integers (the dense rate decides), and on how strong it is.
`SignalKnobs` moves each of those on its own; `data_prep.synth_model` applies them. At the defaults every
factor is 1.0 and the exponent is `DEFAULT_ZIPF_EXPONENT`, so `generate` writes exactly the bytes it
wrote before the knobs existed (tested against stored hashes).

- `zipf_exponent`: value popularity is a bounded Zipf law with this exponent: 0 is uniform over the
  vocabulary, 1.1 (the default) a Criteo-like heavy tail, 2 puts most rows on a handful of values.
- `value_effects`, `pair_effects`, `dense_effects`: factors on the standard deviations of the three parts
  of the logit (per-value effects of some columns; joint effects of a few column pairs; weights on log1p
  of a few integers). 0 removes that part.
- `signal_strength`: a factor on all three at once; the bias is calibrated afterwards, so the positive
  rate stays at 25% and only the oracle AUC moves.
- `pair_rank`: 0 (default) draws each pair's joint effect independently per (value a, value b) by hashing:
  no low-rank structure, only pairs seen often enough can be learnt. K > 0 makes it latent instead,
  u_a . v_b / sqrt(K) with K-dimensional normal factors per value, which a dot-product interaction of
  embeddings can represent and generalise from.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass

DEFAULT_ZIPF_EXPONENT = 1.1
MAX_ZIPF_EXPONENT = 4.0
MAX_SCALE = 100.0
MAX_PAIR_RANK = 64


@dataclass(frozen=True)
class SignalKnobs:
    """Popularity and the scale of each part of the planted logit (see the module docstring)."""

    zipf_exponent: float = DEFAULT_ZIPF_EXPONENT
    """Exponent of the bounded Zipf popularity law, in [0, 4]: 0 uniform, larger a heavier head."""
    value_effects: float = 1.0
    """Factor on the per-value effects, in [0, 100]."""
    pair_effects: float = 1.0
    """Factor on the joint effects of the column pairs, in [0, 100]."""
    dense_effects: float = 1.0
    """Factor on the weights of the integer features, in [0, 100]."""
    signal_strength: float = 1.0
    """Factor on all three parts of the logit, in [0, 100]; the bias is recalibrated after it."""
    pair_rank: int = 0
    """0: hashed joint effects per value pair; K in [1, 64]: latent rank-K factors per value."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.zipf_exponent <= MAX_ZIPF_EXPONENT:
            raise ValueError(f"zipf_exponent: must be in [0, {MAX_ZIPF_EXPONENT}], got {self.zipf_exponent}")
        for name in ("value_effects", "pair_effects", "dense_effects", "signal_strength"):
            value = getattr(self, name)
            if not 0.0 <= value <= MAX_SCALE:
                raise ValueError(f"{name}: must be in [0, {MAX_SCALE}], got {value}")
        if not 0 <= self.pair_rank <= MAX_PAIR_RANK:
            raise ValueError(f"pair_rank: must be in [0, {MAX_PAIR_RANK}], got {self.pair_rank}")

    @property
    def is_default(self) -> bool:
        return self == DEFAULT_SIGNAL

    def value_scale(self) -> float:
        """The factor on each per-value effect's standard deviation."""
        return self.value_effects * self.signal_strength

    def pair_scale(self) -> float:
        """The factor on each pair's joint-effect standard deviation."""
        return self.pair_effects * self.signal_strength

    def dense_scale(self) -> float:
        """The factor on each integer feature's weight."""
        return self.dense_effects * self.signal_strength

    def to_json(self) -> dict[str, float | int]:
        return asdict(self)


DEFAULT_SIGNAL = SignalKnobs()


# (field, type, metavar, help); the flag is the field's name with dashes.
_FLAGS: tuple[tuple[str, type, str, str], ...] = (
    ("zipf_exponent", float, "X",
     f"popularity of the categorical values: a bounded Zipf law with exponent X in [0, {MAX_ZIPF_EXPONENT}]; "
     f"0 is uniform over the vocabulary, 1.1 a Criteo-like heavy tail, 2 a few values take most rows "
     f"(default: {DEFAULT_ZIPF_EXPONENT})"),
    ("value_effects", float, "S",
     f"factor in [0, {MAX_SCALE}] on the per-value effects of C1, C2, C3, C6, C9, C13, C14, C17, C23, C24 "
     "(signal a per-column embedding learns on its own); 0 removes them (default: 1)"),
    ("pair_effects", float, "S",
     f"factor in [0, {MAX_SCALE}] on the joint effects of the pairs C6xC14, C9xC17, C2xC5 (drawn per "
     "value pair with no per-value term: a model must cross the two columns to learn most of them); 0 "
     "removes them (default: 1)"),
    ("dense_effects", float, "S",
     f"factor in [0, {MAX_SCALE}] on the weights of log1p(I1, I6, I11, I13) in the logit; 0 removes them "
     "(default: 1)"),
    ("signal_strength", float, "S",
     f"factor in [0, {MAX_SCALE}] on all three parts at once; the bias is recalibrated to a 25%% positive "
     "rate, so only the oracle AUC moves (default: 1)"),
    ("pair_rank", int, "K",
     f"0: each value pair's joint effect is an independent hashed draw (learnable only for pairs seen "
     f"often); K in [1, {MAX_PAIR_RANK}]: a latent rank-K interaction u_a.v_b/sqrt(K), which dot-product "
     "interactions of embeddings can represent (default: 0)"),
)  # fmt: skip


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds `--zipf-exponent`, `--value-effects`, `--pair-effects`, `--dense-effects`,
    `--signal-strength` and `--pair-rank` (defaults: `SignalKnobs()`)."""
    defaults = DEFAULT_SIGNAL
    for field, kind, metavar, text in _FLAGS:
        parser.add_argument(
            "--" + field.replace("_", "-"),
            type=kind,
            default=getattr(defaults, field),
            metavar=metavar,
            help=text,
        )


def from_cli_arguments(args: argparse.Namespace) -> SignalKnobs:
    """The knobs of parsed flags; a value out of range raises ValueError naming the flag."""
    values = {field: getattr(args, field) for field, *_ in _FLAGS}
    try:
        return SignalKnobs(**values)
    except ValueError as error:
        field = str(error).split(":", 1)[0]
        raise ValueError("--" + field.replace("_", "-") + ":" + str(error).split(":", 1)[1]) from None
