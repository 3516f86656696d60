"""resolve_mobilesam_checkpoint() under torch.distributed: several CPU processes (gloo) race for the same cache.

Every rank calls it at the same moment, as nnU-Net's multi-GPU training does. Each spawned process records what it
got (a path or an error) in a JSON file, and every download attempt appends a line to a marker file.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import NamedTuple

import pytest
import torch.distributed as dist
import torch.multiprocessing

from nnsam.networks import checkpoints

WORLD_SIZE = 3
# Spawning 3 Python processes that import torch takes a while on a 2-core machine; a rank left waiting at a barrier
# is caught by this limit (the process group's own timeout is longer, so it cannot end the wait first).
JOIN_TIMEOUT_S = 120
PROCESS_GROUP_TIMEOUT = timedelta(seconds=600)


class RaceSetup(NamedTuple):
    url: str
    size: int  # declared official size and SHA-256 of what ``url`` serves
    sha256: str
    home: str
    store: str  # file:// rendezvous of the process group
    work_dir: str  # where ranks write their outcome and the download marker


def _count_download_attempts(marker: Path) -> None:
    """Wrap the module's download function so every attempt, in any rank, appends its pid to ``marker``."""
    download = checkpoints.download_mobilesam_checkpoint

    def counted_download(*args, **kwargs):
        with open(marker, "a") as f:
            f.write(f"{os.getpid()}\n")
        return download(*args, **kwargs)

    checkpoints.download_mobilesam_checkpoint = counted_download


def _resolve_in_rank(rank: int, setup: RaceSetup) -> dict[str, object]:
    dist.init_process_group("gloo", init_method=setup.store, rank=rank, world_size=WORLD_SIZE,
                            timeout=PROCESS_GROUP_TIMEOUT)
    try:
        dist.barrier()  # the test's own barrier: all ranks start resolving together, as in a real training
        started = time.monotonic()
        try:
            outcome: dict[str, object] = {"path": str(checkpoints.resolve_mobilesam_checkpoint(url=setup.url))}
        except Exception as e:
            outcome = {"error_type": type(e).__name__, "error": str(e)}
        outcome["seconds"] = time.monotonic() - started
        return outcome
    finally:
        dist.destroy_process_group()


def _rank_main(rank: int, setup: RaceSetup) -> None:
    """Entry point of one spawned rank (top level, so that spawn can import it)."""
    os.environ["HOME"] = setup.home
    os.environ.pop(checkpoints.MOBILESAM_CHECKPOINT_ENV, None)
    checkpoints.MOBILESAM_SIZE = setup.size
    checkpoints.MOBILESAM_SHA256 = setup.sha256
    _count_download_attempts(Path(setup.work_dir) / "download_attempts.txt")
    try:
        outcome = _resolve_in_rank(rank, setup)
    except BaseException as e:  # e.g. a gloo error: reported to the test instead of lost in the child's stderr
        outcome = {"error_type": type(e).__name__, "error": str(e), "seconds": None}
    (Path(setup.work_dir) / f"rank{rank}.json").write_text(json.dumps(outcome))


def _run_ranks(setup: RaceSetup) -> list[dict[str, object]]:
    """Run ``_rank_main`` in WORLD_SIZE spawned processes; fail (and stop them) if any is still running in time."""
    context = torch.multiprocessing.get_context("spawn")
    processes = [context.Process(target=_rank_main, args=(rank, setup), daemon=True) for rank in range(WORLD_SIZE)]
    for process in processes:
        process.start()
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    hung = [rank for rank, process in enumerate(processes) if process.is_alive()]
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join()
    assert not hung, f"ranks {hung} still running after {JOIN_TIMEOUT_S} s (left waiting at a barrier?)"
    work_dir = Path(setup.work_dir)
    return [json.loads((work_dir / f"rank{rank}.json").read_text()) for rank in range(WORLD_SIZE)]


def _download_attempts(setup: RaceSetup) -> int:
    marker = Path(setup.work_dir) / "download_attempts.txt"
    return len(marker.read_text().splitlines()) if marker.exists() else 0


@pytest.fixture
def race(tmp_path, monkeypatch) -> RaceSetup:
    """A small fake weight file declared official, an empty home and a rendezvous file, all under tmp_path."""
    monkeypatch.delenv(checkpoints.MOBILESAM_CHECKPOINT_ENV, raising=False)
    payload = os.urandom(4 << 20)  # large enough that unsynchronised downloads overlap
    weights = tmp_path / "served" / "mobile_sam.pt"
    weights.parent.mkdir()
    weights.write_bytes(payload)
    (tmp_path / "home").mkdir()
    return RaceSetup(url=weights.as_uri(), size=len(payload), sha256=hashlib.sha256(payload).hexdigest(),
                     home=str(tmp_path / "home"), store=(tmp_path / "process_group_store").as_uri(),
                     work_dir=str(tmp_path))


def _cache_of(setup: RaceSetup) -> Path:
    return Path(setup.home) / ".cache" / "nnsam" / "mobile_sam.pt"


def test_only_rank_zero_downloads_and_all_ranks_use_its_file(race):
    outcomes = _run_ranks(race)

    cached = _cache_of(race)
    assert [outcome.get("error") for outcome in outcomes] == [None] * WORLD_SIZE, outcomes
    assert [outcome["path"] for outcome in outcomes] == [str(cached)] * WORLD_SIZE
    assert _download_attempts(race) == 1
    assert checkpoints.sha256_of(cached) == race.sha256
    assert not list(cached.parent.glob("mobile_sam.pt.part*"))


def test_failed_download_on_rank_zero_stops_every_rank(race):
    missing = race._replace(url=(Path(race.work_dir) / "served" / "no_such_file.pt").as_uri())
    outcomes = _run_ranks(missing)  # fails if any rank is still waiting at the barrier

    assert [outcome["error_type"] for outcome in outcomes] == ["EncoderWeightsError"] * WORLD_SIZE, outcomes
    assert "Could not download the MobileSAM weights" in str(outcomes[0]["error"])
    assert all("Rank 0" in str(outcome["error"]) for outcome in outcomes[1:])
    assert all(float(outcome["seconds"]) < 10 for outcome in outcomes)
    assert _download_attempts(missing) == 1
    cached = _cache_of(missing)
    assert not cached.exists() and not list(cached.parent.glob("mobile_sam.pt.part*"))
