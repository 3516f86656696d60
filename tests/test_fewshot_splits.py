import pytest

from nnsam.fewshot.splits import SplitError, make_fewshot_split, subject_of


def _acdc_like(num_patients: int = 10) -> list[str]:
    return [f"patient{p:03d}_frame{f:02d}" for p in range(1, num_patients + 1) for f in (1, 12)]


@pytest.mark.parametrize(
    ("case_id", "subject"),
    [
        ("patient001_frame01", "patient001"),
        ("HC18_010_2HC", "HC18_010"),
        ("HC18_010_HC", "HC18_010"),
        ("010_2HC", "010"),
        ("subj003_b", "subj003"),
        ("sub01_ses2", "sub01"),
        ("la_003", "la_003"),  # the prefix "la" names no subject, so the case stands alone
        ("case7", "case7"),
    ],
)
def test_subject_of_known_and_generic_names(case_id: str, subject: str) -> None:
    assert subject_of(case_id) == subject


def test_group_regex_overrides_and_must_match() -> None:
    assert subject_of("scanA_site2_x", r"^scan\w_(site\d)") == "site2"
    with pytest.raises(SplitError, match="does not match"):
        subject_of("other", r"^scan")


def test_training_subsets_are_nested_and_keep_subjects_apart_from_test() -> None:
    split = make_fewshot_split(_acdc_like(), seeds=[0, 1], test_fraction=0.2)
    test_subjects = {subject_of(c) for c in split.test_cases}
    assert len(split.test_cases) == 4 and len(test_subjects) == 2
    for seed in (0, 1):
        previous: set[str] = set()
        for n in (1, 2, 4, 8, 16):
            subset = split.train_cases(n, seed)
            assert len(subset) == len(set(subset)) == n
            assert previous <= set(subset)
            assert not {subject_of(c) for c in subset} & test_subjects
            previous = set(subset)
    # Round robin: the first 8 cases come from 8 different patients.
    assert len({subject_of(c) for c in split.train_cases(8, 0)}) == 8
    assert split.train_cases(8, 0) != split.train_cases(8, 1)


def test_split_is_deterministic_and_ignores_input_order() -> None:
    cases = _acdc_like()
    first = make_fewshot_split(cases, seeds=[3])
    second = make_fewshot_split(list(reversed(cases)), seeds=[3])
    assert first == second
    # The test set does not depend on the training seeds.
    assert make_fewshot_split(cases, seeds=[7]).test_cases == first.test_cases


def test_explicit_test_cases_remove_their_subjects_from_training() -> None:
    split = make_fewshot_split(_acdc_like(), seeds=[0], test_cases=["patient002_frame01"])
    assert split.test_cases == ("patient002_frame01",)
    assert split.excluded_cases == ("patient002_frame12",)
    assert "patient002_frame12" not in split.train_cases(split.max_n, 0)
    assert split.max_n == 18
    # The pool that nnU-Net plans on: every case but the test case and its subject's other frame.
    assert split.pool_cases == tuple(c for c in _acdc_like() if not c.startswith("patient002"))


def test_errors_are_explicit() -> None:
    split = make_fewshot_split(_acdc_like(), seeds=[0])
    with pytest.raises(SplitError, match="maximum N is 16"):
        split.train_cases(17, 0)
    with pytest.raises(SplitError, match="Unknown test case ids: nope"):
        make_fewshot_split(_acdc_like(), seeds=[0], test_cases=["nope"])
    with pytest.raises(SplitError, match="test-fraction"):
        make_fewshot_split(_acdc_like(), seeds=[0], test_fraction=1.5)
    with pytest.raises(SplitError, match="two subjects"):
        make_fewshot_split(["patient001_frame01", "patient001_frame12"], seeds=[0])
