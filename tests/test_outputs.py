"""Atomic outputs: complete or absent, clear errors for bad targets, any file name."""

from __future__ import annotations

import io
import json
import os
import stat
import sys

import pytest

from streamer.errors import UsageError
from streamer.outputs import (OutputError, atomic_open, atomic_path, check_output, display_name,
                              write_json, write_text)


def _leftovers(d) -> list[str]:
    return [n for n in os.listdir(d) if ".part" in n]


def test_write_and_replace(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    write_text(target, "second\n")
    assert target.read_text() == "second\n"
    assert _leftovers(tmp_path) == []


def test_new_file_gets_umask_mode_and_replaced_file_keeps_its_mode(tmp_path):
    old = os.umask(0o027)
    try:
        write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640
    b = tmp_path / "b.txt"
    b.write_text("old")
    b.chmod(0o604)
    write_text(b, "new")
    assert stat.S_IMODE(b.stat().st_mode) == 0o604 and b.read_text() == "new"


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failure_or_interrupt_leaves_no_file_and_keeps_the_old_one(tmp_path, exc):
    fresh = tmp_path / "fresh.jsonl"
    with pytest.raises(type(exc)):
        with atomic_open(fresh) as fh:
            fh.write('{"type": "header"}\n')
            raise exc
    assert not fresh.exists()
    kept = tmp_path / "kept.jsonl"
    kept.write_text("complete\n")
    with pytest.raises(type(exc)):
        with atomic_open(kept) as fh:
            fh.write("half")
            raise exc
    assert kept.read_text() == "complete\n"
    assert _leftovers(tmp_path) == []


def test_nothing_visible_under_the_name_until_done(tmp_path):
    target = tmp_path / "t.csv"
    with atomic_open(target) as fh:
        fh.write("a,b\n")
        fh.flush()
        assert not target.exists()
        assert len(_leftovers(tmp_path)) == 1
    assert target.read_text() == "a,b\n"


@pytest.mark.parametrize("make,needle", [
    (lambda d: str(d), "is a directory"),
    (lambda d: str(d / "missing" / "out.json"), "does not exist"),
    (lambda d: str(d / "f.txt" / "out.json"), "is not a directory"),
    (lambda d: "/proc/emostream-out.json", "kernel filesystem"),
    (lambda d: "/proc/self/comm", "kernel filesystem"),
    (lambda d: "/sys/emostream-out.json", "kernel filesystem"),
    (lambda d: str(d) + "/", "not a file name"),
])
def test_bad_targets_are_refused_before_work(tmp_path, make, needle):
    (tmp_path / "f.txt").write_text("x")
    target = make(tmp_path)
    with pytest.raises(OutputError, match=needle) as info:
        check_output(target, "-o")
    assert isinstance(info.value, UsageError) and info.value.exit_code == 64
    assert "\n" not in str(info.value)
    with pytest.raises(OutputError):
        with atomic_open(target) as fh:
            fh.write("x")


def test_read_only_file_and_directory(tmp_path):
    ro = tmp_path / "ro.json"
    ro.write_text("keep")
    ro.chmod(0o444)
    with pytest.raises(OutputError, match="read-only"):
        write_text(ro, "x")
    assert ro.read_text() == "keep"
    d = tmp_path / "rodir"
    d.mkdir()
    d.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="not writable"):
            write_text(d / "out.json", "x")
        assert os.listdir(d) == []
    finally:
        d.chmod(0o755)


def test_dev_full_is_a_clear_error_and_dev_null_works():
    with pytest.raises(OutputError, match="no space left"):
        with atomic_open("/dev/full") as fh:
            fh.write("x" * 100_000)
    write_text("/dev/null", "discarded")


def test_other_os_errors_in_the_block_pass_through(tmp_path):
    with pytest.raises(FileNotFoundError):
        with atomic_open(tmp_path / "o.txt") as fh:
            fh.write("x")
            open(tmp_path / "no-such-input.wav", "rb")
    assert _leftovers(tmp_path) == []


def test_stdout_dash(monkeypatch):
    buf = io.StringIO()
    monkeypatch.setattr(sys, "stdout", buf)
    with atomic_open("-") as fh:
        fh.write("to stdout")
    assert buf.getvalue() == "to stdout"
    check_output(None)


def test_atomic_path_keeps_the_extension(tmp_path):
    target = tmp_path / "plot.png"
    with atomic_path(target) as tmp:
        assert tmp.endswith(".png") and os.path.dirname(tmp) == str(tmp_path)
        with open(tmp, "wb") as fh:
            fh.write(b"\x89PNG")
    assert target.read_bytes() == b"\x89PNG"
    with pytest.raises(ValueError):
        with atomic_path(tmp_path / "x.png") as tmp:
            open(tmp, "wb").close()
            raise ValueError("render failed")
    assert not (tmp_path / "x.png").exists() and _leftovers(tmp_path) == []


def test_non_utf8_file_names(tmp_path):
    name = os.fsdecode(os.fsencode(str(tmp_path)) + b"/caf\xe9-\xff.json")
    shown = display_name(name)
    assert "\ufffd" in shown
    json.dumps(shown).encode("utf-8")  # printable and JSON-safe
    write_json(name, {"source": shown})
    raw = os.fsencode(name)
    assert os.path.exists(raw)
    assert json.loads(open(raw, encoding="utf-8").read())["source"] == shown
    with pytest.raises(OutputError) as info:
        check_output(os.fsdecode(b"/nonexistent-\xff/x.json"))
    str(info.value).encode("utf-8")  # the message prints without UnicodeEncodeError
