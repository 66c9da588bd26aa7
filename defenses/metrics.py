"""Defense metrics, named once and used by every backdoor defense: CA, ASR, RA and DER.

- CA (clean accuracy): accuracy on the clean test set.
- ASR (attack success rate): share of *triggered* test images whose true class is not the target that
  the model assigns to the backdoor label (target-class images are excluded: they say nothing about
  the backdoor). Computed by :func:`attacks.poison.backdoor_metrics`.
- RA (robust accuracy): share of the same triggered images classified as their true class.
- DER (defense effectiveness rating), from BackdoorBench (Wu et al., "BackdoorBench: A Comprehensive
  Benchmark of Backdoor Learning", NeurIPS 2022 Datasets and Benchmarks, Sec. 4.1)::

      DER = [max(0, ΔASR) − max(0, ΔCA) + 1] / 2,   ΔASR = ASR_before − ASR_after,
                                                     ΔCA  = CA_before  − CA_after

  in [0, 1]: 1 = the backdoor is fully removed at no cost in clean accuracy, 0.5 = nothing changed,
  0 = clean accuracy fully lost without touching the backdoor. A lower ASR and a higher CA after the
  defense can only raise it. (One public toolbox computes the deltas as after − before, which
  rewards a defense for *raising* ASR; :func:`defense_effectiveness_rating` is tested against
  hand-made numbers for the sign.)
"""

from __future__ import annotations

from dataclasses import dataclass

from workbench.errors import check_in_range


def defense_effectiveness_rating(ca_before: float, asr_before: float, ca_after: float, asr_after: float) -> float:
    """The defense effectiveness rating (DER) of a backdoor defense.

    DER = [max(0, ASR_before − ASR_after) − max(0, CA_before − CA_after) + 1] / 2 (all rates in [0, 1]).

    Parameters
    ----------
    ca_before, asr_before : float
        Clean accuracy and attack success rate of the undefended model, in [0, 1].
    ca_after, asr_after : float
        The same for the defended model, in [0, 1].

    Returns
    -------
    float
        DER in [0, 1]: 1 removes the backdoor at no accuracy cost, 0.5 changes nothing.

    Raises
    ------
    BadInput
        When a rate is outside [0, 1].

    Examples
    --------
    >>> defense_effectiveness_rating(0.99, 1.0, 0.97, 0.02)
    0.98
    """
    for name, v in (("CA before", ca_before), ("ASR before", asr_before), ("CA after", ca_after),
                    ("ASR after", asr_after)):
        check_in_range(name, float(v), 0.0, 1.0)
    d_asr = asr_before - asr_after
    d_ca = ca_before - ca_after
    return (max(0.0, d_asr) - max(0.0, d_ca) + 1.0) / 2.0


def der(before, after) -> float:
    """DER between two :class:`attacks.poison.BackdoorMetrics` (undefended ``before``, defended ``after``).

    Parameters
    ----------
    before : BackdoorMetrics
        The undefended model's metrics.
    after : BackdoorMetrics
        The defended model's metrics.

    Returns
    -------
    float
        :func:`defense_effectiveness_rating` of their CA and ASR.
    """
    return defense_effectiveness_rating(before.clean_accuracy, before.attack_success_rate,
                                        after.clean_accuracy, after.attack_success_rate)


@dataclass
class DefenseRow:
    """One line of a before/after table: a defense (or none) and its CA, ASR, RA, DER and time.

    Parameters
    ----------
    defense : str
        The defense's name (or the undefended model's).
    clean_accuracy, attack_success_rate, robust_accuracy : float
        CA, ASR and RA, in [0, 1].
    der : float or None
        DER against the undefended model; ``None`` for the undefended model itself.
    seconds : float
        The defense's time.

    Returns
    -------
    A DefenseRow (a dataclass) holding these fields.
    """

    defense: str
    clean_accuracy: float
    attack_success_rate: float
    robust_accuracy: float
    der: float | None  # None for the undefended model itself
    seconds: float

    def cells(self) -> list:
        pct = lambda v: round(100 * v, 2)  # noqa: E731
        return [self.defense, pct(self.clean_accuracy), pct(self.attack_success_rate), pct(self.robust_accuracy),
                "—" if self.der is None else round(self.der, 4), round(self.seconds, 1)]


TABLE_COLUMNS = ["defense", "CA %", "ASR %", "RA %", "DER", "time (s)"]
