"""CAMUS (Leclerc et al., IEEE TMI 2019) to nnU-Net v2 raw datasets.

Input: the public NIfTI release, which this module only reads::

    CAMUS_DIR/database_nifti/patientNNNN/patientNNNN_{2CH,4CH}_{ED,ES,half_sequence}[_gt].nii.gz
    CAMUS_DIR/database_nifti/patientNNNN/Info_{2CH,4CH}.cfg        "Key: value" lines (ED, ES, NbFrame, ...)
    CAMUS_DIR/database_split/subgroup_{training,validation,testing}.txt

ED and ES images are 2D. A half sequence (ED to ES) is a 3D NIfTI whose third axis is time, so that
``sitk.GetArrayFromImage`` gives an array (time, y, x). ``ED`` and ``ES`` in the cfg are 1-based frame numbers
within the half sequence; ``NbFrame`` is its number of frames. Labels: 0 background, 1 LV cavity, 2 myocardium,
3 left atrium.

Output of ``convert_camus`` (``NNN`` = ``dataset_id``)::

    OUT_DIR/DatasetNNN_CAMUS/        the classic task: ED and ES of both views as 2D cases (patient0001_2CH_ED, ...)
    OUT_DIR/Dataset{NNN+1}_CAMUSSeq/ the half sequences, one case per view (patient0001_2CH_seq), labels per frame
        imagesTr/CASE_0000.nii.gz, labelsTr/CASE.nii.gz, dataset.json,
        camus_split.json      the official split as case ids (``read_official_split``)
        camus_metadata.json   per case: patient, view, phase, ED/ES frame numbers, NbFrame, image quality, EF, cfg

A sequence case is written as a 3D NIfTI with time as the slowest array axis and a time "spacing" of 1, so nnU-Net
sees time as its z axis: the ``2d`` configuration trains on single frames, and since every case has the same z
spacing nnU-Net's target spacing along z is 1 too, so frames are never resampled or mixed along time. In-plane
spacing, origin and direction are copied from the source files. The ``--unlabelled`` mode
(``convert_camus_unlabelled``) writes ``OUT_DIR/imagesTs_2d`` and ``OUT_DIR/imagesTs_seq`` for ``nnUNetv2_predict -i``.

All output is built in a hidden ``OUT_DIR/.partial-*`` folder and moved into place only when complete, so a failed
conversion never leaves an output that looks finished; existing outputs are never overwritten. Every problem with
the input raises ``CamusFormatError`` naming the file.
"""
from __future__ import annotations

import argparse
import gzip
import json
import re
import shutil
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

VIEWS = ("2CH", "4CH")
KEY_PHASES = ("ED", "ES")
SEQUENCE_PHASE = "half_sequence"
SPLIT_SUBSETS = ("training", "validation", "testing")
CAMUS_LABELS = {"background": 0, "LV": 1, "MYO": 2, "LA": 3}
NIFTI_DIR = "database_nifti"
SPLIT_DIR = "database_split"
FILE_ENDING = ".nii.gz"

# nnU-Net picks the intensity normalisation from the channel name and z-scores every name it does not know
# ("CT", "noNorm", "zscore", "rescale_to_0_1", "rgb_to_0_1"). Z-scoring per image is what B-mode ultrasound needs
# (gain differs per acquisition), so the channel gets a descriptive name rather than one of nnU-Net's keywords.
CHANNEL_NAMES = {"0": "ultrasound"}
DEFAULT_DATASET_ID = 110
KEY_FRAME_DATASET_NAME = "CAMUS"
SEQUENCE_DATASET_NAME = "CAMUSSeq"  # at dataset id + 1
SEQUENCE_CASE_SUFFIX = "seq"
# The "spacing" of the time axis of a sequence case. One value for all cases keeps nnU-Net from resampling in time.
TIME_SPACING = 1.0
SPLIT_FILE = "camus_split.json"
METADATA_FILE = "camus_metadata.json"
UNLABELLED_KEY_FRAME_DIR = "imagesTs_2d"
UNLABELLED_SEQUENCE_DIR = "imagesTs_seq"
REQUIRED_CFG_KEYS = ("ED", "ES", "NbFrame")
# The 2023 release names the ejection fraction "EF", the 2019 release "LVef".
EF_CFG_KEYS = ("EF", "LVef")


class CamusFormatError(ValueError):
    """A CAMUS file is missing or malformed; the message names the file."""


@dataclass(frozen=True)
class ViewInfo:
    """The content of one ``Info_{view}.cfg``."""

    ed_frame: int  # 1-based, within the half sequence
    es_frame: int
    num_frames: int
    image_quality: str | None
    ejection_fraction: float | None
    fields: dict[str, str]  # every "Key: value" line, as written


@dataclass
class CamusCase:
    """One case to write: a 2D key frame (ED or ES) or a half sequence (time, y, x)."""

    case_id: str
    is_sequence: bool
    image: sitk.Image
    label: sitk.Image | None
    metadata: dict[str, object] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------------
# File layout


def camus_image_path(patient_dir: Path, view: str, phase: str, ground_truth: bool = False) -> Path:
    """``patientNNNN_{view}_{phase}[_gt].nii.gz`` in ``patient_dir``; ``phase`` is ED, ES or half_sequence."""
    suffix = "_gt" if ground_truth else ""
    return patient_dir / f"{patient_dir.name}_{view}_{phase}{suffix}{FILE_ENDING}"


def camus_cfg_path(patient_dir: Path, view: str) -> Path:
    return patient_dir / f"Info_{view}.cfg"


def camus_split_path(camus_dir: Path, subset: str) -> Path:
    return camus_dir / SPLIT_DIR / f"subgroup_{subset}.txt"


def case_id_of(patient: str, view: str, phase: str) -> str:
    """``patient0001_2CH_ED`` or, for the half sequence, ``patient0001_2CH_seq``: patient first, so that the
    few-shot splits (``nnsam.fewshot.splits.subject_of``) keep all cases of a patient together."""
    return f"{patient}_{view}_{SEQUENCE_CASE_SUFFIX if phase == SEQUENCE_PHASE else phase}"


def dataset_folder_name(dataset_id: int, name: str) -> str:
    return f"Dataset{dataset_id:03d}_{name}"


def find_patient_dirs(camus_dir: Path) -> list[Path]:
    """The patient folders of ``CAMUS_DIR/database_nifti``, sorted by name."""
    nifti_dir = camus_dir / NIFTI_DIR
    if not nifti_dir.is_dir():
        raise CamusFormatError(f"{nifti_dir}: missing; CAMUS_DIR must hold the release's {NIFTI_DIR} folder")
    patient_dirs = sorted(p for p in nifti_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not patient_dirs:
        raise CamusFormatError(f"{nifti_dir}: no patient folders")
    return patient_dirs


# ---------------------------------------------------------------------------------------------------------------
# Reading and checking


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise CamusFormatError(f"{path}: missing")


def _parse_frame_number(value: str, key: str, path: Path) -> int:
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not number.is_integer():
        raise CamusFormatError(f"{path}: {key} must be a whole frame number, got {value!r}")
    return int(number)


def _optional_float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # informational only; the raw text stays in ``ViewInfo.fields``


def read_info_cfg(path: Path) -> ViewInfo:
    """Parse an ``Info_{view}.cfg`` and check its frame numbers against each other (1 <= ED, ES <= NbFrame)."""
    _require_file(path)
    fields: dict[str, str] = {}
    for line_number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        key, colon, value = line.partition(":")
        if not colon or not key.strip():
            raise CamusFormatError(f"{path}: line {line_number} is not 'Key: value': {line.strip()!r}")
        fields[key.strip()] = value.strip()
    missing = [key for key in REQUIRED_CFG_KEYS if key not in fields]
    if missing:
        raise CamusFormatError(f"{path}: missing {', '.join(missing)}")
    ed, es, num_frames = (_parse_frame_number(fields[key], key, path) for key in REQUIRED_CFG_KEYS)
    if num_frames < 1:
        raise CamusFormatError(f"{path}: NbFrame must be at least 1, got {num_frames}")
    for key, frame in (("ED", ed), ("ES", es)):
        if not 1 <= frame <= num_frames:
            raise CamusFormatError(f"{path}: {key} {frame} is outside the half sequence's frames 1..{num_frames}")
    ejection_fraction = next((fields[key] for key in EF_CFG_KEYS if key in fields), None)
    return ViewInfo(ed, es, num_frames, fields.get("ImageQuality"), _optional_float(ejection_fraction), fields)


def check_info_matches_sequence(info: ViewInfo, num_frames: int, cfg_path: Path, sequence_path: Path) -> None:
    if info.num_frames != num_frames:
        raise CamusFormatError(
            f"{cfg_path}: NbFrame {info.num_frames} disagrees with the {num_frames} frames of {sequence_path.name}"
        )


def _check_gzip_complete(path: Path) -> None:
    """Decompress to the end, which checks length and CRC: ITK reads a truncated .nii.gz without complaint and
    fills the missing voxels with zeros, so an interrupted download would otherwise pass as an image."""
    try:
        with gzip.open(path) as stream:
            while stream.read(1 << 24):
                pass
    except (OSError, EOFError, zlib.error) as error:
        raise CamusFormatError(f"{path}: truncated or corrupt gzip file ({error})") from None


def _read_nifti(path: Path) -> sitk.Image:
    _require_file(path)
    try:
        image = sitk.ReadImage(str(path), imageIO="NiftiImageIO")
    except RuntimeError as error:
        # SimpleITK's message spans several lines; its last line after the reader's name says what went wrong.
        reason = str(error).strip().splitlines()[-1].rpartition("): ")[2].replace(str(path), "the file")
        raise CamusFormatError(f"{path}: not a readable NIfTI image ({reason})") from None
    if path.name.endswith(".gz"):
        _check_gzip_complete(path)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise CamusFormatError(f"{path}: expected a grey-level image, got "
                               f"{image.GetNumberOfComponentsPerPixel()} components per pixel")
    return image


def read_key_frame(path: Path) -> sitk.Image:
    """An ED or ES image (or its labels) as a 2D image."""
    image = _read_nifti(path)
    # Some tools store a 2D image as 3D with one slice; that is the same image.
    if image.GetDimension() == 3 and image.GetSize()[2] == 1:
        image = image[:, :, 0]
    if image.GetDimension() != 2:
        raise CamusFormatError(f"{path}: expected a 2D image, got {image.GetDimension()}D of size {image.GetSize()}")
    return image


def read_half_sequence(path: Path) -> sitk.Image:
    """A half sequence (or its labels) as a 3D image whose third axis is time: array (time, y, x)."""
    image = _read_nifti(path)
    if image.GetDimension() != 3:
        raise CamusFormatError(
            f"{path}: expected a 2D+time sequence stored as 3D NIfTI with time as the third axis, got a "
            f"{image.GetDimension()}D image of size {image.GetSize()}"
        )
    return image


def read_label(path: Path, image: sitk.Image, image_path: Path, reader: Callable[[Path], sitk.Image]) -> sitk.Image:
    """The labels of ``image`` as uint8 on ``image``'s grid, after checking shape and values.

    The label gets the image's header: nnU-Net requires identical geometry, and a label of the same shape is on
    the image's pixel grid whatever its own header says.
    """
    array = sitk.GetArrayFromImage(reader(path))
    expected_shape = sitk.GetArrayViewFromImage(image).shape
    if array.shape != expected_shape:
        raise CamusFormatError(
            f"{path}: label shape {array.shape} does not match the shape {expected_shape} of {image_path.name}"
        )
    values = np.unique(array)
    unexpected = [v for v in values.tolist() if v not in CAMUS_LABELS.values()]
    if unexpected:
        raise CamusFormatError(
            f"{path}: label values {unexpected} outside 0..3 (0 background, 1 LV, 2 MYO, 3 LA)"
        )
    label = sitk.GetImageFromArray(array.astype(np.uint8))
    label.CopyInformation(image)
    return label


def _as_sequence_case(sequence: sitk.Image) -> sitk.Image:
    """Set the time spacing to ``TIME_SPACING``; in-plane spacing, origin and direction stay as in the source."""
    spacing = sequence.GetSpacing()
    sequence.SetSpacing((spacing[0], spacing[1], TIME_SPACING))
    return sequence


def _case_metadata(patient: str, view: str, phase: str, info: ViewInfo | None, source: Path,
                   camus_dir: Path) -> dict[str, object]:
    return {
        "patient": patient,
        "view": view,
        "phase": phase,
        "ed_frame": info.ed_frame if info else None,
        "es_frame": info.es_frame if info else None,
        "num_frames": info.num_frames if info else None,
        "image_quality": info.image_quality if info else None,
        "ejection_fraction": info.ejection_fraction if info else None,
        "cfg": info.fields if info else None,
        "source": source.relative_to(camus_dir).as_posix(),
    }


def _read_view(camus_dir: Path, patient_dir: Path, view: str, labelled: bool) -> list[CamusCase]:
    """The ED, ES and half-sequence cases of one view. Without ``labelled`` the ground truth is not read, and
    missing images and cfg are skipped (a cfg that is there is still checked)."""
    patient = patient_dir.name
    cfg_path = camus_cfg_path(patient_dir, view)
    info = read_info_cfg(cfg_path) if labelled or cfg_path.exists() else None
    cases = []
    for phase in (*KEY_PHASES, SEQUENCE_PHASE):
        image_path = camus_image_path(patient_dir, view, phase)
        if not labelled and not image_path.exists():
            continue
        is_sequence = phase == SEQUENCE_PHASE
        reader = read_half_sequence if is_sequence else read_key_frame
        image = reader(image_path)
        if is_sequence:
            if info is not None:
                check_info_matches_sequence(info, image.GetSize()[2], cfg_path, image_path)
            image = _as_sequence_case(image)
        label_path = camus_image_path(patient_dir, view, phase, ground_truth=True)
        label = read_label(label_path, image, image_path, reader) if labelled else None
        metadata = _case_metadata(patient, view, phase, info, image_path, camus_dir)
        cases.append(CamusCase(case_id_of(patient, view, phase), is_sequence, image, label, metadata))
    return cases


def read_patient(camus_dir: Path, patient_dir: Path, labelled: bool = True) -> list[CamusCase]:
    """All cases of one patient: per view ED, ES (2D) and the half sequence (time, y, x)."""
    cases = [case for view in VIEWS for case in _read_view(camus_dir, patient_dir, view, labelled)]
    if not cases:
        raise CamusFormatError(f"{patient_dir}: no CAMUS images (expected e.g. "
                               f"{camus_image_path(patient_dir, VIEWS[0], SEQUENCE_PHASE).name})")
    return cases


def required_files(patient_dir: Path) -> list[Path]:
    """Every file a labelled conversion reads for one patient."""
    files = []
    for view in VIEWS:
        files.append(camus_cfg_path(patient_dir, view))
        for phase in (*KEY_PHASES, SEQUENCE_PHASE):
            files += [camus_image_path(patient_dir, view, phase), camus_image_path(patient_dir, view, phase, True)]
    return files


def read_split_files(camus_dir: Path, patients: Sequence[str]) -> dict[str, str]:
    """Patient -> official subset (training, validation or testing), checked against the patient folders."""
    subset_of: dict[str, str] = {}
    for subset in SPLIT_SUBSETS:
        path = camus_split_path(camus_dir, subset)
        _require_file(path)
        for patient in (line.strip() for line in path.read_text().splitlines()):
            if not patient:
                continue
            if patient in subset_of:
                raise CamusFormatError(f"{path}: {patient} is already in subgroup_{subset_of[patient]}.txt")
            if patient not in patients:
                raise CamusFormatError(f"{path}: {patient} has no folder in {camus_dir / NIFTI_DIR}")
            subset_of[patient] = subset
    unassigned = [p for p in patients if p not in subset_of]
    if unassigned:
        raise CamusFormatError(f"{camus_dir / SPLIT_DIR}: {unassigned[0]} (and {len(unassigned) - 1} more) are in "
                               f"no subgroup_*.txt")
    return subset_of


# ---------------------------------------------------------------------------------------------------------------
# Writing


def _check_output_free(out_dir: Path, names: Sequence[str]) -> None:
    """Refuse to overwrite: an output folder of the same name, or another dataset with the same nnU-Net id."""
    for name in names:
        match = re.match(r"(Dataset\d{3}_)", name)
        clashes = sorted(out_dir.glob(f"{match.group(1)}*")) if match else [out_dir / name]
        existing = [path for path in clashes if path.exists()]
        if existing:
            raise FileExistsError(f"{existing[0]} already exists; choose another OUT_DIR"
                                  f"{' or --dataset-id' if match else ''}, or remove it")


def _check_not_inside(out_dir: Path, camus_dir: Path) -> None:
    if out_dir.resolve().is_relative_to(camus_dir.resolve()):
        raise ValueError(f"OUT_DIR {out_dir} is inside CAMUS_DIR {camus_dir}, which is never written to; "
                         "choose an OUT_DIR elsewhere")


@contextmanager
def _staged_output(out_dir: Path, names: Sequence[str]) -> Iterator[Path]:
    """A hidden ``OUT_DIR/.partial-*`` folder to build ``names`` in; they are moved into ``out_dir`` only after the
    block succeeds, and the folder is removed whatever happens."""
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".partial-{names[0]}-", dir=out_dir))
    try:
        yield staging
        _check_output_free(out_dir, names)  # again: another process may have written one meanwhile
        for name in names:
            (staging / name).rename(out_dir / name)  # same file system: each folder appears at once
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _progress(patient_dirs: list[Path]) -> tqdm:
    return tqdm(patient_dirs, desc="CAMUS patients", unit="patient", dynamic_ncols=True)


def _write_image(image: sitk.Image, path: Path) -> None:
    sitk.WriteImage(image, str(path), useCompression=True)


def _write_json(data: object, path: Path) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def _write_training_case(dataset_dir: Path, case: CamusCase) -> None:
    _write_image(case.image, dataset_dir / "imagesTr" / f"{case.case_id}_0000{FILE_ENDING}")
    _write_image(case.label, dataset_dir / "labelsTr" / f"{case.case_id}{FILE_ENDING}")


def _write_dataset_files(dataset_dir: Path, description: str, metadata: dict[str, dict[str, object]],
                         subset_of: dict[str, str]) -> None:
    """dataset.json, the official split as case ids, and the per-case metadata of one dataset."""
    _write_json({
        "name": dataset_dir.name.split("_", 1)[1],
        "description": description,
        "reference": "Leclerc et al., Deep Learning for Segmentation using an Open Large-Scale Dataset in 2D "
                     "Echocardiography, IEEE TMI 2019",
        "channel_names": CHANNEL_NAMES,
        "labels": CAMUS_LABELS,
        "numTraining": len(metadata),
        "file_ending": FILE_ENDING,
    }, dataset_dir / "dataset.json")
    split = {subset: sorted(c for c, m in metadata.items() if subset_of[m["patient"]] == subset)
             for subset in SPLIT_SUBSETS}
    _write_json(split, dataset_dir / SPLIT_FILE)
    _write_json(dict(sorted(metadata.items())), dataset_dir / METADATA_FILE)


@dataclass(frozen=True)
class CamusDatasets:
    """The two nnU-Net raw datasets written by ``convert_camus``."""

    key_frames: Path  # DatasetNNN_CAMUS: ED and ES as 2D cases
    sequences: Path  # Dataset{NNN+1}_CAMUSSeq: half sequences, time as z


def _check_dataset_id(dataset_id: int) -> None:
    # nnU-Net ids have three digits and the sequence dataset takes the next one.
    if not 1 <= dataset_id <= 998:
        raise ValueError(f"--dataset-id must be between 1 and 998 (the sequences take id + 1), got {dataset_id}")


def convert_camus(camus_dir: str | Path, out_dir: str | Path, dataset_id: int = DEFAULT_DATASET_ID) -> CamusDatasets:
    """Convert a labelled CAMUS release into ``DatasetNNN_CAMUS`` and ``Dataset{NNN+1}_CAMUSSeq`` under ``out_dir``.

    Every patient needs all six images of both views, their ``_gt`` files and both cfgs, and must be in exactly
    one ``subgroup_*.txt``. Raises ``CamusFormatError`` (input), ``FileExistsError`` (an output or its dataset id
    exists) or ``ValueError`` (options) before anything is moved into ``out_dir``.
    """
    camus_dir, out_dir = Path(camus_dir), Path(out_dir)
    _check_dataset_id(dataset_id)
    _check_not_inside(out_dir, camus_dir)
    patient_dirs = find_patient_dirs(camus_dir)
    subset_of = read_split_files(camus_dir, [p.name for p in patient_dirs])
    names = (dataset_folder_name(dataset_id, KEY_FRAME_DATASET_NAME),
             dataset_folder_name(dataset_id + 1, SEQUENCE_DATASET_NAME))
    _check_output_free(out_dir, names)
    for patient_dir in patient_dirs:  # a missing file fails in a second, not after converting every patient
        for path in required_files(patient_dir):
            _require_file(path)

    with _staged_output(out_dir, names) as staging:
        key_frame_dir, sequence_dir = (staging / name for name in names)
        for dataset_dir in (key_frame_dir, sequence_dir):
            (dataset_dir / "imagesTr").mkdir(parents=True)
            (dataset_dir / "labelsTr").mkdir()
        metadata: dict[Path, dict[str, dict[str, object]]] = {key_frame_dir: {}, sequence_dir: {}}
        for patient_dir in _progress(patient_dirs):
            for case in read_patient(camus_dir, patient_dir, labelled=True):
                dataset_dir = sequence_dir if case.is_sequence else key_frame_dir
                _write_training_case(dataset_dir, case)
                metadata[dataset_dir][case.case_id] = case.metadata
        _write_dataset_files(key_frame_dir, "CAMUS apical 2CH and 4CH echocardiography: ED and ES frames as 2D "
                             "cases (patientNNNN_{2CH,4CH}_{ED,ES}).", metadata[key_frame_dir], subset_of)
        _write_dataset_files(sequence_dir, "CAMUS half sequences (ED to ES) of the 2CH and 4CH views, one case per "
                             "view (patientNNNN_{2CH,4CH}_seq) with labels on every frame. Time is the z axis "
                             f"(slowest array axis, spacing {TIME_SPACING}); the 2d configuration segments frame by "
                             "frame.", metadata[sequence_dir], subset_of)
    return CamusDatasets(out_dir / names[0], out_dir / names[1])


def convert_camus_unlabelled(camus_dir: str | Path, out_dir: str | Path) -> tuple[Path, Path]:
    """Convert CAMUS-layout images without ground truth into ``out_dir/imagesTs_2d`` (ED/ES) and
    ``out_dir/imagesTs_seq`` (half sequences), as ``CASE_0000.nii.gz`` for ``nnUNetv2_predict -i``.

    Whatever images a patient folder has are converted (``_gt`` files and split files are ignored; cfgs are
    optional but checked when present). Returns the two folders.
    """
    camus_dir, out_dir = Path(camus_dir), Path(out_dir)
    _check_not_inside(out_dir, camus_dir)
    patient_dirs = find_patient_dirs(camus_dir)
    names = (UNLABELLED_KEY_FRAME_DIR, UNLABELLED_SEQUENCE_DIR)
    _check_output_free(out_dir, names)
    with _staged_output(out_dir, names) as staging:
        for name in names:
            (staging / name).mkdir()
        for patient_dir in _progress(patient_dirs):
            for case in read_patient(camus_dir, patient_dir, labelled=False):
                folder = staging / (UNLABELLED_SEQUENCE_DIR if case.is_sequence else UNLABELLED_KEY_FRAME_DIR)
                _write_image(case.image, folder / f"{case.case_id}_0000{FILE_ENDING}")
    return out_dir / names[0], out_dir / names[1]


# ---------------------------------------------------------------------------------------------------------------
# Reading a converted dataset


def _read_dataset_json_file(dataset_dir: str | Path, file_name: str) -> dict:
    path = Path(dataset_dir) / file_name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; was {Path(dataset_dir).name} written by nnsam convert-camus?")
    return json.loads(path.read_text())


def read_official_split(dataset_dir: str | Path) -> dict[str, list[str]]:
    """The official CAMUS split of a converted dataset as case ids: ``{"training": [...], "validation": [...],
    "testing": [...]}``.

    For the few-shot runner: hold out ``testing`` (every case of a test patient is there), draw the N training
    cases from ``training`` (optionally plus ``validation``). Works for both the 2D and the sequence dataset.
    """
    split = _read_dataset_json_file(dataset_dir, SPLIT_FILE)
    return {subset: list(split[subset]) for subset in SPLIT_SUBSETS}


def read_case_metadata(dataset_dir: str | Path) -> dict[str, dict[str, object]]:
    """Case id -> patient, view, phase (ED, ES or half_sequence), ed_frame, es_frame, num_frames (1-based, from the
    cfg), image_quality, ejection_fraction, cfg (all cfg fields as text) and source (path in CAMUS_DIR)."""
    return _read_dataset_json_file(dataset_dir, METADATA_FILE)


# ---------------------------------------------------------------------------------------------------------------
# Command line: nnsam convert-camus


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``convert-camus`` options on ``parser``."""
    parser.add_argument("camus_dir", type=Path, metavar="CAMUS_DIR",
                        help=f"the CAMUS release (holding {NIFTI_DIR} and {SPLIT_DIR}); it is only read")
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR",
                        help="where the nnU-Net raw datasets (or, with --unlabelled, the imagesTs folders) go, "
                             "e.g. $nnUNet_raw")
    parser.add_argument("--dataset-id", type=int, default=None,
                        help=f"id of the 2D dataset; the sequences get id + 1 (default: {DEFAULT_DATASET_ID})")
    parser.add_argument("--unlabelled", action="store_true",
                        help=f"images without ground truth: write OUT_DIR/{UNLABELLED_KEY_FRAME_DIR} and "
                             f"OUT_DIR/{UNLABELLED_SEQUENCE_DIR} for nnUNetv2_predict -i")


def _convert(args: argparse.Namespace) -> str:
    """Run the conversion the options ask for and return what to tell the user."""
    if args.unlabelled:
        if args.dataset_id is not None:
            raise ValueError("--dataset-id has no effect with --unlabelled (no dataset is written)")
        key_frames, sequences = convert_camus_unlabelled(args.camus_dir, args.out_dir)
        return f"wrote {key_frames} and {sequences} (inputs for nnUNetv2_predict -i)"
    dataset_id = DEFAULT_DATASET_ID if args.dataset_id is None else args.dataset_id
    datasets = convert_camus(args.camus_dir, args.out_dir, dataset_id)
    return (f"wrote {datasets.key_frames} and {datasets.sequences}; official split in "
            f"{SPLIT_FILE}, per-case metadata in {METADATA_FILE}")


def run(args: argparse.Namespace) -> int:
    """``nnsam convert-camus``: 0 on success; a problem the user can fix is one error line and exit code 2."""
    try:
        message = _convert(args)
    except (ValueError, OSError) as error:  # CamusFormatError is a ValueError
        print(f"nnsam convert-camus: error: {' '.join(str(error).splitlines())}", file=sys.stderr)
        return 2
    print(message)
    return 0
