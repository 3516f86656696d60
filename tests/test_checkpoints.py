import contextlib
import functools
import hashlib
import http.server
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest
import torch

from nnsam.networks import checkpoints
from nnsam.networks.build_encoder import build_image_encoder, get_encoder_spec
from nnsam.networks.checkpoints import (EncoderWeightsError, download_mobilesam_checkpoint, read_encoder_state_dict,
                                        resolve_mobilesam_checkpoint)


@pytest.fixture
def clean_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(checkpoints.MOBILESAM_CHECKPOINT_ENV, raising=False)
    return tmp_path / "home" / ".cache" / "nnsam" / "mobile_sam.pt"


def partial_files_next_to(destination: Path) -> list[Path]:
    return sorted(destination.parent.glob(destination.name + ".part*"))


def declare_official(payload: bytes, monkeypatch) -> None:
    """Make ``payload`` pass the size and SHA-256 check, so tests can download small files."""
    monkeypatch.setattr(checkpoints, "MOBILESAM_SIZE", len(payload))
    monkeypatch.setattr(checkpoints, "MOBILESAM_SHA256", hashlib.sha256(payload).hexdigest())


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """A URL on 127.0.0.1 whose server accepts every connection and then never sends a byte."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)  # so the accepting thread notices that the test is over
    stop, connections = threading.Event(), []

    def accept_until_stopped() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                connections.append(listener.accept()[0])

    thread = threading.Thread(target=accept_until_stopped, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/mobile_sam.pt"
    finally:
        stop.set()
        thread.join()
        # Closing also ends a client that would otherwise wait forever (the behaviour under test).
        for connection in connections:
            connection.close()
        listener.close()


class QuietFileHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # keep the test output clean
        pass


@contextlib.contextmanager
def http_server_for(directory: Path) -> Iterator[str]:
    """Base URL of an HTTP server on 127.0.0.1 that serves ``directory`` (with Content-Length)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(QuietFileHandler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_environment_variable_comes_first(clean_home, mobilesam_checkpoint, monkeypatch):
    clean_home.parent.mkdir(parents=True)
    clean_home.write_bytes(b"cached copy")
    monkeypatch.setenv(checkpoints.MOBILESAM_CHECKPOINT_ENV, str(mobilesam_checkpoint))
    assert resolve_mobilesam_checkpoint(download=False) == mobilesam_checkpoint


def test_missing_explicit_file_is_an_error_not_a_fallback(clean_home, tmp_path, monkeypatch):
    clean_home.parent.mkdir(parents=True)
    clean_home.write_bytes(b"cached copy")
    monkeypatch.setenv(checkpoints.MOBILESAM_CHECKPOINT_ENV, str(tmp_path / "nope.pt"))
    with pytest.raises(EncoderWeightsError, match="not a file"):
        resolve_mobilesam_checkpoint()


def test_cache_is_used_when_no_variable_is_set(clean_home):
    clean_home.parent.mkdir(parents=True)
    clean_home.write_bytes(b"x")
    assert resolve_mobilesam_checkpoint(download=False) == clean_home


def test_offline_without_file_says_where_to_put_it(clean_home):
    with pytest.raises(EncoderWeightsError) as info:
        resolve_mobilesam_checkpoint(url="http://127.0.0.1:9/mobile_sam.pt")  # nothing listens on port 9
    message = str(info.value)
    assert str(clean_home) in message and checkpoints.MOBILESAM_CHECKPOINT_ENV in message
    assert not clean_home.exists() and not partial_files_next_to(clean_home)


def test_download_checks_size_and_sha256(clean_home, tmp_path, mobilesam_checkpoint, monkeypatch):
    wrong = tmp_path / "wrong.pt"
    wrong.write_bytes(b"not the official file")
    with pytest.raises(EncoderWeightsError, match="not the official mobile_sam.pt"):
        download_mobilesam_checkpoint(clean_home, url=wrong.as_uri())
    assert not clean_home.exists() and not partial_files_next_to(clean_home)

    # The same code path with a file whose size and hash we declare official: it lands in the cache.
    payload = mobilesam_checkpoint.read_bytes()
    declare_official(payload, monkeypatch)
    assert resolve_mobilesam_checkpoint(url=mobilesam_checkpoint.as_uri()) == clean_home
    assert clean_home.read_bytes() == payload
    assert not partial_files_next_to(clean_home)


def test_download_over_http_streams_with_progress(clean_home, tmp_path, monkeypatch, capsys):
    payload = os.urandom(300_000)
    (tmp_path / "served").mkdir()
    (tmp_path / "served" / "mobile_sam.pt").write_bytes(payload)
    declare_official(payload, monkeypatch)
    with http_server_for(tmp_path / "served") as base_url:
        assert download_mobilesam_checkpoint(clean_home, url=f"{base_url}/mobile_sam.pt") == clean_home
    assert clean_home.read_bytes() == payload and not partial_files_next_to(clean_home)
    assert "100%" in capsys.readouterr().err  # the bar knew the total (Content-Length) and reached it


def test_partial_files_of_other_processes_are_left_alone(clean_home, tmp_path, monkeypatch):
    # Two trainings started at once each download; neither may write into or move the other's partial file.
    payload = os.urandom(100_000)
    source = tmp_path / "weights.pt"
    source.write_bytes(payload)
    declare_official(payload, monkeypatch)
    clean_home.parent.mkdir(parents=True)
    others = [clean_home.with_name("mobile_sam.pt.part"), clean_home.with_name("mobile_sam.pt.part-1")]
    for other in others:
        other.write_bytes(b"another process is writing this")

    assert download_mobilesam_checkpoint(clean_home, url=source.as_uri()) == clean_home
    assert clean_home.read_bytes() == payload
    assert all(other.read_bytes() == b"another process is writing this" for other in others)
    assert partial_files_next_to(clean_home) == sorted(others)


def test_download_timeout_setting(monkeypatch):
    monkeypatch.delenv("NNSAM_DOWNLOAD_TIMEOUT", raising=False)
    assert checkpoints.download_timeout_s() == checkpoints.DEFAULT_DOWNLOAD_TIMEOUT_S == 60
    monkeypatch.setenv("NNSAM_DOWNLOAD_TIMEOUT", "2.5")
    assert checkpoints.download_timeout_s() == 2.5
    for unusable in ("0", "-1", "soon", "inf", "nan"):
        monkeypatch.setenv("NNSAM_DOWNLOAD_TIMEOUT", unusable)
        with pytest.raises(EncoderWeightsError, match="NNSAM_DOWNLOAD_TIMEOUT"):
            checkpoints.download_timeout_s()


def test_download_times_out_when_server_never_answers(clean_home, monkeypatch):
    monkeypatch.setenv("NNSAM_DOWNLOAD_TIMEOUT", "1")
    # The server closes first, then the pool waits for the call: a download without a timeout fails the test
    # below instead of hanging it.
    with ThreadPoolExecutor(max_workers=1) as pool, silent_server() as url:
        started = time.monotonic()
        call = pool.submit(download_mobilesam_checkpoint, clean_home, url)
        error = call.exception(timeout=15)
        elapsed = time.monotonic() - started
    assert isinstance(error, EncoderWeightsError)
    assert "timed out" in str(error) and "NNSAM_DOWNLOAD_TIMEOUT" in str(error)
    assert elapsed < 8
    assert not clean_home.exists() and not partial_files_next_to(clean_home)


def test_truncated_file_is_a_clear_error(tmp_path, mobilesam_checkpoint):
    truncated = tmp_path / "mobile_sam.pt"
    truncated.write_bytes(mobilesam_checkpoint.read_bytes()[: 5_000_000])
    with pytest.raises(EncoderWeightsError, match="truncated or not a PyTorch checkpoint"):
        read_encoder_state_dict(truncated)


def test_wrong_keys_are_a_clear_error(tmp_path):
    not_sam = tmp_path / "resnet.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, not_sam)
    with pytest.raises(EncoderWeightsError, match="not a SAM-family checkpoint"):
        read_encoder_state_dict(not_sam)

    # A SAM-family file for another encoder: LiteMedSAM's weights do not fit MobileSAM's TinyViT (other stem).
    encoder = build_image_encoder("mobilesam")
    with pytest.raises(EncoderWeightsError, match="do not fit this encoder"):
        encoder.load_pretrained(get_encoder_spec("litemedsam").load_pretrained_state(), weights_sha256="0" * 64)
    assert not encoder.has_pretrained_weights


def test_mobilesam_weights_load_from_official_layout(clean_home, mobilesam_checkpoint, monkeypatch):
    monkeypatch.setenv(checkpoints.MOBILESAM_CHECKPOINT_ENV, str(mobilesam_checkpoint))
    encoder = build_image_encoder("mobilesam", pretrained=True)
    full = torch.load(mobilesam_checkpoint, weights_only=True)
    for key, value in encoder.encoder.state_dict().items():
        assert torch.equal(value, full["image_encoder." + key])
