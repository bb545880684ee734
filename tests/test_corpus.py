import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest

from scratchmlm import ScratchMLMError, load_text, read_text, split_text, tiny_shakespeare_path
from scratchmlm import corpus
from scratchmlm.corpus import TINY_SHAKESPEARE_SHA256


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/input.txt"  # nothing listens there any more


class _Serve:
    """A loopback HTTP server that answers every GET with ``payload``."""

    def __init__(self, payload: bytes):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/input.txt"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_real_corpus_is_found_and_verified(corpus_text):
    assert len(corpus_text) == 1_115_394
    assert hashlib.sha256(corpus_text.encode()).hexdigest() == TINY_SHAKESPEARE_SHA256


def test_offline_and_missing_says_how_to_supply(tmp_path):
    with pytest.raises(ScratchMLMError) as error:
        tiny_shakespeare_path(tmp_path, url=closed_port_url())
    message = str(error.value)
    assert "could not be downloaded" in message
    assert str(tmp_path / "tinyshakespeare.txt") in message
    assert "SCRATCHMLM_DATA_DIR" in message and "--data" in message
    assert not (tmp_path / "tinyshakespeare.txt").exists()


def test_no_download_allowed_and_missing(tmp_path):
    with pytest.raises(ScratchMLMError, match="is not in"):
        tiny_shakespeare_path(tmp_path, download=False)


def test_download_is_verified_and_cached(tmp_path, corpus_text):
    with _Serve(corpus_text.encode()) as server:
        path = tiny_shakespeare_path(tmp_path, url=server.url)
    assert path == tmp_path / "tinyshakespeare.txt"
    assert path.read_text() == corpus_text
    assert not list(tmp_path.glob("*.part"))
    # cached: a second call needs no network at all
    assert tiny_shakespeare_path(tmp_path, url=closed_port_url()) == path


def test_download_with_wrong_checksum_is_not_saved(tmp_path):
    with _Serve(b"not shakespeare at all\n") as server:
        with pytest.raises(ScratchMLMError, match="sha256") as error:
            tiny_shakespeare_path(tmp_path, url=server.url)
    assert "was not saved" in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_existing_file_with_wrong_checksum_is_not_used(tmp_path, corpus_text):
    (tmp_path / "tinyshakespeare.txt").write_text(corpus_text[:-1])
    with pytest.raises(ScratchMLMError) as error:
        tiny_shakespeare_path(tmp_path, url=closed_port_url())
    assert TINY_SHAKESPEARE_SHA256 in str(error.value)
    assert "Delete it" in str(error.value)


def test_data_dir_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SCRATCHMLM_DATA_DIR", str(tmp_path))
    assert corpus.data_dir() == tmp_path
    monkeypatch.delenv("SCRATCHMLM_DATA_DIR")
    assert corpus.data_dir() == Path.home() / ".cache" / "scratchmlm"


def test_any_utf8_file_by_path(tmp_path):
    path = tmp_path / "poem.txt"
    path.write_text("Ünïcödé is fine — 🙂\n", encoding="utf-8")
    assert load_text(path) == "Ünïcödé is fine — 🙂\n"


def test_missing_file(tmp_path):
    with pytest.raises(ScratchMLMError, match="does not exist"):
        read_text(tmp_path / "nope.txt")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    with pytest.raises(ScratchMLMError, match="is empty"):
        read_text(path)


def test_not_utf8_names_the_byte_offset(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf".encode() + "é au lait".encode("latin-1"))
    with pytest.raises(ScratchMLMError) as error:
        read_text(path)
    assert "not UTF-8" in str(error.value)
    assert "byte offset 3" in str(error.value)
    assert "0xe9" in str(error.value)


def test_split_at_ninety_percent(corpus_text):
    split = split_text(corpus_text)
    cut = int(0.9 * len(corpus_text))
    assert split.train == corpus_text[:cut] and split.valid == corpus_text[cut:]
    assert len(split.train) == 1_003_854 and len(split.valid) == 111_540


def test_split_shorter_than_one_window():
    with pytest.raises(ScratchMLMError, match="validation split has 40 characters, fewer than one window of 41"):
        split_text("x" * 400, min_length=41)
    with pytest.raises(ScratchMLMError, match="training split"):
        split_text("x" * 40, min_length=37)
    assert split_text("x" * 40, min_length=4).valid == "xxxx"
