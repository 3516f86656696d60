"""Temporal-consistency metric (Painchaud et al. 2022) on synthetic apical sequences with known geometry.

The phantom: an upright LV cavity shaped like a bullet (a rectangle from the base up to ``center_row``, capped by a
half-ellipse towards the apex at the top), a myocardium of constant thickness around it except at the base, and an
atrium below the base. Its LV base points are the bottom corners of the rectangle, so the base width and the length
are known exactly in pixels.

How a jitter counts. The deviation of frame t compares a(t) with (a(t - 1) + a(t + 1)) / 2, so a jitter of size d
injected at frame t alone gives a deviation of d at t and of d / 2 at t - 1 and t + 1 (each has the jittered frame
as one of its two neighbours). A jitter with d / 2 far above the threshold therefore flags exactly the three frames
t - 1, t, t + 1; one with threshold < d < 2 * threshold flags frame t only. Jittered frames are kept four frames
apart so that their neighbourhoods do not overlap, and integer translations move only the centre attributes.
"""
import json

import numpy as np
import pytest
from skimage.transform import rotate

from nnsam.echo.temporal_consistency import (
    ATTRIBUTES,
    PAINCHAUD_THRESHOLDS,
    TemporalConsistencyReport,
    attribute_bounds,
    frame_attributes,
    lv_base_points,
    neighbour_deviation,
    temporal_consistency,
)

SIZE = 128
NUM_FRAMES = 11
_ROWS, _COLS = np.mgrid[:SIZE, :SIZE]


def _bullet(half_width: int, dome: int, center_row: int, center_col: int, base_row: int) -> np.ndarray:
    body = (_ROWS >= center_row) & (_ROWS <= base_row) & (np.abs(_COLS - center_col) <= half_width)
    cap = (_ROWS < center_row) & (
        ((_ROWS - center_row) / dome) ** 2 + ((_COLS - center_col) / (half_width + 0.5)) ** 2 <= 1
    )
    return body | cap


def phantom_frame(half_width: int, dome: int, center_row: int = 56, center_col: int = 64, base_row: int = 80,
                  myo: int = 5, atrium: int = 14) -> np.ndarray:
    """One (SIZE, SIZE) label frame: 1 LV cavity, 2 myocardium, 3 atrium, apex at the top."""
    frame = np.zeros((SIZE, SIZE), np.uint8)
    frame[_bullet(half_width + myo, dome + myo, center_row, center_col, base_row)] = 2
    frame[_bullet(half_width, dome, center_row, center_col, base_row)] = 1
    below = ((_ROWS - base_row - atrium) / atrium) ** 2 + ((_COLS - center_col) / (half_width + 2)) ** 2 <= 1
    frame[below & (frame == 0)] = 3
    return frame


def smooth_sequence(**kwargs) -> np.ndarray:
    """An LV that widens by 2 px and lengthens by 1 px per frame: areas grow smoothly, the rest linearly."""
    return np.stack([phantom_frame(10 + t, 18 + t, **kwargs) for t in range(NUM_FRAMES)])


def large_heart_sequence() -> np.ndarray:
    return np.stack([phantom_frame(12 + t, 30 + t, center_row=60, base_row=90, myo=9) for t in range(NUM_FRAMES)])


def tilted(sequence: np.ndarray, degrees: float) -> np.ndarray:
    return np.stack([
        rotate(frame, degrees, order=0, preserve_range=True, center=(64, 60)).astype(np.uint8) for frame in sequence
    ])


def translated(frame: np.ndarray, rows: int, cols: int) -> np.ndarray:
    return np.roll(frame, (rows, cols), axis=(0, 1))  # the heart stays clear of the borders: nothing wraps


@pytest.fixture(scope="module")
def ground_truth() -> list[np.ndarray]:
    """A small "dataset" of reference sequences: hearts of several sizes, positions and tilts."""
    smooth = smooth_sequence()
    return [smooth, np.roll(smooth, (10, -12), axis=(1, 2)), tilted(smooth, 15), tilted(smooth, -15),
            large_heart_sequence()]


@pytest.fixture(scope="module")
def bounds(ground_truth) -> dict[str, tuple[float, float]]:
    return attribute_bounds(ground_truth)


def _flagged(report: TemporalConsistencyReport, sequence: int = 0) -> list[int]:
    return [int(t) for t in np.flatnonzero(report.frame_flags[sequence])]


def _flagged_for(report: TemporalConsistencyReport, attribute: str, sequence: int = 0) -> list[int]:
    return [int(t) for t in np.flatnonzero(report.attribute_flags[sequence][attribute])]


# --- attributes ---------------------------------------------------------------------------------------------------

def test_attributes_of_a_frame_with_known_geometry():
    frame = phantom_frame(12, 24)
    assert [p.tolist() for p in lv_base_points(frame)] == [[80, 52], [80, 76]]  # bottom corners of the cavity
    attributes = frame_attributes(frame[None])
    assert attributes["lv_area"][0] == np.sum(frame == 1)
    assert attributes["myo_area"][0] == np.sum(frame == 2)
    assert attributes["lv_base_width"][0] == 24
    assert attributes["lv_length"][0] == 80 - (56 - 24)  # base midpoint (80, 64) to the apex (32, 64)
    assert attributes["epi_center_x"][0] == 64  # left-right symmetric
    rows = np.nonzero(np.isin(frame, (1, 2)))[0]
    assert attributes["epi_center_y"][0] == pytest.approx(rows.mean())
    assert abs(attributes["lv_orientation"][0]) < 1e-9  # upright: major axis along the rows


def test_orientation_of_a_tilted_lv():
    frame = phantom_frame(12, 24)
    for degrees in (-20, 10):
        orientation = frame_attributes(tilted(frame[None], degrees))["lv_orientation"][0]
        assert orientation == pytest.approx(degrees, abs=1.0)  # counter-clockwise positive


def test_spacing_gives_millimetres():
    frame = phantom_frame(12, 24)[None]
    pixels = frame_attributes(frame)
    mm = frame_attributes(frame, spacing=(0.5, 0.25))  # (row, column) pixel size
    assert mm["lv_area"][0] == pytest.approx(pixels["lv_area"][0] * 0.125)
    assert mm["myo_area"][0] == pytest.approx(pixels["myo_area"][0] * 0.125)
    assert mm["lv_base_width"][0] == pytest.approx(24 * 0.25)  # the base is horizontal: column spacing
    assert mm["lv_length"][0] == pytest.approx(48 * 0.5)  # the long axis is vertical: row spacing
    assert mm["epi_center_x"][0] == pytest.approx(64 * 0.25)
    assert mm["epi_center_y"][0] == pytest.approx(pixels["epi_center_y"][0] * 0.5)


def test_missing_structures_give_undefined_attributes():
    frame = phantom_frame(12, 24)
    no_lv = np.where(frame == 1, 0, frame)
    no_myo = np.where(frame == 2, 0, frame)
    attributes = frame_attributes(np.stack([no_lv, no_myo, np.zeros_like(frame)]))
    assert attributes["lv_area"].tolist() == [0, np.sum(frame == 1), 0]
    assert attributes["myo_area"].tolist() == [np.sum(frame == 2), 0, 0]
    assert np.isnan(attributes["lv_orientation"][[0, 2]]).all() and np.isfinite(attributes["lv_orientation"][1])
    assert np.isnan(attributes["lv_base_width"]).all() and np.isnan(attributes["lv_length"]).all()  # no base
    assert np.isfinite(attributes["epi_center_x"][:2]).all() and np.isnan(attributes["epi_center_x"][2])


# --- bounds ---------------------------------------------------------------------------------------------------------

def test_bounds_are_the_extremes_over_the_ground_truth(ground_truth, bounds):
    assert list(bounds) == list(ATTRIBUTES)
    curves = [frame_attributes(sequence) for sequence in ground_truth]
    for name in ATTRIBUTES:
        values = np.concatenate([curve[name] for curve in curves])
        assert bounds[name] == (np.nanmin(values), np.nanmax(values))
    assert bounds["lv_orientation"] == pytest.approx((-15, 15), abs=1)  # the tilted references


def test_an_attribute_constant_over_the_ground_truth_cannot_be_scaled():
    with pytest.raises(ValueError, match="lv_orientation"):  # every LV upright: orientation is always 0
        attribute_bounds([smooth_sequence()])


def test_neighbour_deviation_is_scaled_and_zero_at_the_ends():
    deviation = neighbour_deviation(np.array([0.0, 1.0, 2.0, 7.0, 4.0]), (0.0, 10.0))
    np.testing.assert_allclose(deviation, [0, 0, -0.2, 0.4, 0])


# --- counting -------------------------------------------------------------------------------------------------------

def test_smooth_sequences_have_no_inconsistent_frame(bounds):
    report = temporal_consistency([smooth_sequence(), large_heart_sequence()], bounds)
    assert report.total_inconsistent_frames == 0
    assert report.per_attribute == {name: 0 for name in ATTRIBUTES}
    assert report.sequences_with_inconsistency == 0 and report.fraction_sequences_with_inconsistency == 0
    assert report.num_frames == 2 * NUM_FRAMES


def test_jitter_in_two_frames_flags_them_and_their_neighbours(bounds):
    sequence = smooth_sequence()
    sequence[3] = translated(sequence[3], 0, 6)  # the heart jumps 6 px right in frame 3 ...
    sequence[7] = translated(sequence[7], 5, 0)  # ... and 5 px down in frame 7
    # 6 px is 0.45 of the centre-x range (threshold 0.0046), 5 px 0.35 of the centre-y range (threshold 0.011):
    # frames 2, 3, 4 flag for epi_center_x, 6, 7, 8 for epi_center_y; translation leaves the other attributes alone.
    report = temporal_consistency([sequence], bounds)
    assert _flagged(report) == [2, 3, 4, 6, 7, 8]
    assert report.total_inconsistent_frames == 6
    assert report.per_attribute == {**{name: 0 for name in ATTRIBUTES}, "epi_center_x": 3, "epi_center_y": 3}
    assert _flagged_for(report, "epi_center_x") == [2, 3, 4]


def test_shrunk_lv_in_two_frames(bounds):
    sequence = smooth_sequence()
    for t in (3, 7):
        # Same epicardium, cavity 4 px narrower on each side and 8 px shorter: a thicker myocardium.
        sequence[t] = phantom_frame(10 + t - 4, 18 + t - 8, myo=5 + 4)
    report = temporal_consistency([sequence], bounds)
    assert _flagged(report) == [2, 3, 4, 6, 7, 8]  # a change in frame t can only flag t - 1, t, t + 1
    assert report.total_inconsistent_frames == 6
    for name in ("lv_area", "lv_base_width", "lv_length", "myo_area"):
        assert report.per_attribute[name] == 6, name
    assert report.per_attribute["epi_center_x"] == 0 and report.per_attribute["lv_orientation"] == 0


def test_jitter_between_threshold_and_twice_threshold_flags_only_that_frame(bounds):
    sequence = smooth_sequence()
    sequence[3] = translated(sequence[3], 0, 1)
    sequence[7] = translated(sequence[7], 0, -1)
    low, high = bounds["epi_center_x"]
    jitter = 1 / (high - low)  # scaled deviation at the jittered frame; its neighbours deviate by half of it
    report = temporal_consistency([sequence], bounds, thresholds={"epi_center_x": 0.75 * jitter})
    assert _flagged(report) == [3, 7]
    assert report.per_attribute == {"epi_center_x": 2}
    assert report.thresholds == {"epi_center_x": 0.75 * jitter}


def test_first_and_last_frames_never_count(bounds):
    sequence = smooth_sequence()
    sequence[0] = translated(sequence[0], 0, 6)
    sequence[-1] = translated(sequence[-1], 6, 0)
    report = temporal_consistency([sequence], bounds)
    # Only their single neighbours flag (frame 1 has frame 0 as a neighbour, frame 9 has frame 10).
    assert _flagged(report) == [1, NUM_FRAMES - 2]
    assert not report.frame_flags[0][0] and not report.frame_flags[0][-1]


def test_undefined_attributes_count_as_inconsistent(bounds):
    sequence = smooth_sequence()
    sequence[3][sequence[3] == 1] = 0  # the LV cavity vanishes in frame 3
    sequence[7][sequence[7] == 2] = 0  # the myocardium vanishes in frame 7
    report = temporal_consistency([sequence], bounds)
    assert _flagged(report) == [2, 3, 4, 6, 7, 8]
    # lv_orientation is undefined in frame 3 only; lv_base_width in frames 3 and 7.
    assert _flagged_for(report, "lv_orientation") == [2, 3, 4]
    assert _flagged_for(report, "lv_base_width") == [2, 3, 4, 6, 7, 8]


def test_report_over_several_sequences(bounds):
    jittered = smooth_sequence()
    jittered[5] = translated(jittered[5], 0, 6)
    report = temporal_consistency([smooth_sequence(), jittered, large_heart_sequence()], bounds)
    assert report.num_sequences == 3 and report.num_frames == 3 * NUM_FRAMES
    assert report.per_sequence == (0, 3, 0)
    assert report.total_inconsistent_frames == 3
    assert report.sequences_with_inconsistency == 1
    assert report.fraction_sequences_with_inconsistency == pytest.approx(1 / 3)
    assert report.bounds == bounds and report.thresholds == dict(PAINCHAUD_THRESHOLDS)
    summary = json.loads(json.dumps(report.summary()))
    assert summary["total_inconsistent_frames"] == 3 and summary["bounds"]["lv_area"] == list(bounds["lv_area"])


def test_counts_do_not_depend_on_the_unit_when_bounds_use_the_same_spacing(ground_truth, bounds):
    jittered = smooth_sequence()
    jittered[3] = translated(jittered[3], 0, 6)
    in_pixels = temporal_consistency([jittered], bounds)
    spacing = (0.3, 0.3)
    in_mm = temporal_consistency([jittered], attribute_bounds(ground_truth, spacing), spacings=[spacing])
    assert in_mm.bounds["lv_area"][1] == pytest.approx(bounds["lv_area"][1] * 0.09)
    assert _flagged(in_mm) == _flagged(in_pixels) == [2, 3, 4]
    assert in_mm.per_attribute == in_pixels.per_attribute


def test_short_sequences_have_nothing_to_flag(bounds):
    report = temporal_consistency([smooth_sequence()[:1], smooth_sequence()[:2]], bounds)
    assert report.total_inconsistent_frames == 0 and report.num_frames == 3


def test_thresholds_are_the_papers():
    assert dict(PAINCHAUD_THRESHOLDS) == {
        "lv_area": 1.60e-2, "lv_base_width": 9.69e-2, "lv_length": 2.62e-2, "lv_orientation": 2.29e-2,
        "myo_area": 3.21e-2, "epi_center_x": 4.56e-3, "epi_center_y": 1.10e-2,
    }
    assert set(PAINCHAUD_THRESHOLDS) == set(ATTRIBUTES)


def test_wrong_inputs_are_refused(bounds):
    with pytest.raises(ValueError, match="T, H, W"):
        frame_attributes(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="integer"):
        frame_attributes(np.zeros((2, 4, 4), np.float32))
    with pytest.raises(ValueError, match="spacings"):
        temporal_consistency([smooth_sequence()] * 2, bounds, spacings=[(1, 1)] * 3)
    with pytest.raises(KeyError, match="lv_area"):
        temporal_consistency([smooth_sequence()], {"myo_area": (0.0, 1.0)})
