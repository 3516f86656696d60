"""Group-aware, nested few-shot splits.

One fixed test set is held out per experiment; training subsets of size N are then prefixes of one seeded ordering
of the remaining cases, so for a given seed the N=4 subset is contained in the N=8 subset and so on, and every
trainer sees exactly the same cases. "Group-aware" means that all cases of one subject (the ED and ES frames of an
ACDC patient, the HC and 2HC images of an HC18 fetus) are on the same side of the train/test boundary: otherwise
the test set would contain near-duplicates of training images and flatter both methods.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

# Seed of the test-set draw. It is deliberately independent of the training seeds so that every (n, seed) run is
# scored on the same held-out cases.
TEST_SPLIT_SEED = 12345

# Known naming schemes, tried in order; group 1 is the subject.
SUBJECT_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"^(patient\d+)_"),  # ACDC: patient001_frame01
    re.compile(r"^(HC18_\d+)_\d*HC$"),  # HC18 as converted here: HC18_010_HC, HC18_010_2HC
    re.compile(r"^(\d+)_\d*HC$"),  # HC18 challenge names: 010_HC, 010_2HC
    re.compile(r"^(subj\d+)_"),  # nnsam synthetic: subj003_a
)


class SplitError(ValueError):
    """The requested split cannot be made (unknown case ids, N too large, ...)."""


def subject_of(case_id: str, group_regex: str | None = None) -> str:
    """The subject a case belongs to.

    ``group_regex`` (a user override) must match the case id; its first group, or the whole match if it has no
    group, is the subject. Without it, the known naming schemes above are tried. The generic fallback drops the
    last ``_`` part when what remains still holds a digit (``sub01_ses2`` -> ``sub01``), because then the remainder
    carries the subject number; ``la_003`` keeps its full id, since ``la`` would lump every case together.
    """
    if group_regex is not None:
        match = re.search(group_regex, case_id)
        if match is None:
            raise SplitError(f"--group-regex {group_regex!r} does not match case id {case_id!r}")
        return match.group(1) if match.groups() else match.group(0)
    for pattern in SUBJECT_PATTERNS:
        match = pattern.match(case_id)
        if match:
            return match.group(1)
    prefix = case_id.rpartition("_")[0]
    if any(ch.isdigit() for ch in prefix):
        return prefix
    return case_id


def group_cases(case_ids: list[str], group_regex: str | None = None) -> "OrderedDict[str, list[str]]":
    """Subject -> its cases, both sorted, so the result does not depend on the order of ``case_ids``."""
    groups: OrderedDict[str, list[str]] = OrderedDict()
    for case in sorted(case_ids):
        groups.setdefault(subject_of(case, group_regex), []).append(case)
    return OrderedDict(sorted(groups.items()))


@dataclass(frozen=True)
class FewShotSplit:
    """The held-out test set and the seeded ordering of the training pool for one experiment."""

    test_cases: tuple[str, ...]
    # Per training seed: all pool cases, in the order they are added as N grows.
    training_orders: dict[int, tuple[str, ...]]
    # Pool cases dropped because a case of the same subject is in an explicitly given test list.
    excluded_cases: tuple[str, ...] = ()

    @property
    def pool_cases(self) -> tuple[str, ...]:
        """Every case that may be trained on: all cases minus the test set and the cases excluded with it.

        nnU-Net plans and preprocesses these only, so that no statistic is taken from the test set.
        """
        return tuple(sorted(next(iter(self.training_orders.values()), ())))

    @property
    def max_n(self) -> int:
        """The largest N that can be drawn."""
        return min(len(order) for order in self.training_orders.values())

    def train_cases(self, n: int, seed: int) -> list[str]:
        """The first ``n`` cases of the ordering for ``seed``; nested in ``n`` by construction."""
        if n < 1:
            raise SplitError(f"N must be at least 1, got {n}")
        if n > self.max_n:
            raise SplitError(
                f"N={n} training cases requested but only {self.max_n} cases remain after holding out "
                f"{len(self.test_cases)} test cases; the maximum N is {self.max_n}."
            )
        return list(self.training_orders[seed][:n])


def check_test_fraction(test_fraction: float) -> None:
    """Raise ``SplitError`` unless ``test_fraction`` is strictly between 0 and 1."""
    if not 0.0 < test_fraction < 1.0:
        raise SplitError(f"--test-fraction must be in (0, 1), got {test_fraction}")


def choose_test_cases(
    case_ids: list[str], test_fraction: float, group_regex: str | None = None
) -> list[str]:
    """Whole subjects, drawn with a fixed seed, until at least ``test_fraction`` of the cases are held out."""
    check_test_fraction(test_fraction)
    groups = group_cases(case_ids, group_regex)
    if len(groups) < 2:
        raise SplitError("Need at least two subjects to hold out a test set without splitting a subject.")
    subjects = list(groups)
    order = np.random.default_rng(TEST_SPLIT_SEED).permutation(len(subjects))
    wanted = max(1, round(test_fraction * len(case_ids)))
    test: list[str] = []
    for index in order[:-1]:  # never take the last subject: something must remain for training
        if len(test) >= wanted:
            break
        test.extend(groups[subjects[index]])
    return sorted(test)


def _round_robin_order(groups: "OrderedDict[str, list[str]]", seed: int) -> tuple[str, ...]:
    """Shuffle subjects and their cases, then take one case per subject per round.

    This way the first N cases come from N distinct subjects whenever there are that many, which is what a
    few-shot experiment with "N labelled images" should mean.
    """
    rng = np.random.default_rng(seed)
    subjects = [list(groups)[i] for i in rng.permutation(len(groups))]
    shuffled = {s: [groups[s][i] for i in rng.permutation(len(groups[s]))] for s in subjects}
    order: list[str] = []
    for round_index in range(max(len(cases) for cases in shuffled.values())):
        order.extend(shuffled[s][round_index] for s in subjects if round_index < len(shuffled[s]))
    return tuple(order)


def make_fewshot_split(
    case_ids: list[str],
    seeds: list[int],
    test_fraction: float = 0.2,
    test_cases: list[str] | None = None,
    group_regex: str | None = None,
) -> FewShotSplit:
    """Hold out a test set (explicit ``test_cases`` or a group-aware ``test_fraction``) and order the rest per seed.

    Deterministic: the same inputs always give the same split, whatever the order of ``case_ids``.
    """
    all_cases = sorted(set(case_ids))
    if len(all_cases) != len(case_ids):
        raise SplitError("Duplicate case ids in the dataset.")
    if test_cases:
        unknown = sorted(set(test_cases) - set(all_cases))
        if unknown:
            raise SplitError(f"Unknown test case ids: {', '.join(unknown)}")
        test = sorted(set(test_cases))
    else:
        test = choose_test_cases(all_cases, test_fraction, group_regex)
    test_subjects = {subject_of(c, group_regex) for c in test}
    pool = [c for c in all_cases if c not in test]
    # With an explicit test list a subject may be split; its other cases must then leave the training pool.
    excluded = [c for c in pool if subject_of(c, group_regex) in test_subjects]
    pool = [c for c in pool if c not in excluded]
    if not pool:
        raise SplitError("No training cases remain after holding out the test set.")
    groups = group_cases(pool, group_regex)
    orders = {int(seed): _round_robin_order(groups, int(seed)) for seed in seeds}
    return FewShotSplit(test_cases=tuple(test), training_orders=orders, excluded_cases=tuple(excluded))
