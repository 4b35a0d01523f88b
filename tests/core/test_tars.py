"""Tar reading: grouping by key as webdataset does, offsets, concatenated archives, unsafe names, truncation."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

from pipeline.core.tars import TarSample, iter_tar_samples, match_key, read_member, split_key


def make_tar(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_groups_members_and_records_offsets() -> None:
    raw = make_tar([("a.jpg", b"IMG1"), ("a.txt", b"cap a"), ("b.png", b"IMG22"), ("b.txt", b"cap b")])
    samples = list(iter_tar_samples(io.BytesIO(raw), max_member_bytes=1000))
    assert [s.key for s in samples] == ["a", "b"]
    assert set(samples[0].members) == {"jpg", "txt"}
    m = samples[1].members["png"]
    assert read_member(io.BytesIO(raw), m.offset, m.size) == b"IMG22"


def test_unsafe_names_are_flagged_not_read() -> None:
    raw = make_tar([("../../evil.jpg", b"x"), ("../../evil.txt", b"x"), ("/abs.jpg", b"y"), ("ok.jpg", b"z")])
    samples = [s for s in iter_tar_samples(io.BytesIO(raw), 1000) if isinstance(s, TarSample)]
    assert [(s.key, s.problem) for s in samples] == [
        ("../../evil", "unsafe_member_path"),  # one sample, one reason, however many bad members
        ("/abs", "unsafe_member_path"),
        ("ok", None),
    ]
    assert samples[0].members == {}


def test_truncated_tar_yields_what_it_has_and_an_error() -> None:
    raw = make_tar([("a.jpg", b"1" * 3000), ("b.jpg", b"2" * 3000)])
    items = list(iter_tar_samples(io.BytesIO(raw[:2500]), 10_000))
    assert isinstance(items[-1], str)
    assert all(isinstance(i, TarSample) for i in items[:-1])


def test_oversized_member_is_not_read() -> None:
    raw = make_tar([("a.jpg", b"1" * 5000), ("a.txt", b"hi")])
    (sample,) = list(iter_tar_samples(io.BytesIO(raw), 100))
    assert sample.members["jpg"].data is None and sample.members["txt"].data == b"hi"


def _gnu_tar(tmp_path: Path, files: dict[str, bytes], *args: str) -> bytes:
    """A tar written by GNU tar itself (`tar -cf out.tar ARGS...` in a folder holding `files`)."""
    src = tmp_path / "src"
    for name, data in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    out = tmp_path / "out.tar"
    subprocess.run(["tar", "--sort=name", "-cf", str(out), *args], cwd=src, check=True)
    return out.read_bytes()


def _keys(raw: bytes) -> list[tuple[str, list[str]]]:
    items = list(iter_tar_samples(io.BytesIO(raw), 10_000))
    assert all(isinstance(i, TarSample) for i in items), items
    return [(s.key, sorted(s.members)) for s in items]


def test_keys_as_webdataset_groups_them_for_gnu_tar_layouts(tmp_path: Path) -> None:
    files = {"000.jpg": b"a", "000.txt": b"b", "a.b.jpg": b"c", "a.b.txt": b"d"}
    want = [("000", ["jpg", "txt"]), ("a", ["b.jpg", "b.txt"])]
    assert _keys(_gnu_tar(tmp_path / "flat", files, "000.jpg", "000.txt", "a.b.jpg", "a.b.txt")) == want
    assert _keys(_gnu_tar(tmp_path / "dot", files, ".")) == want  # "./000.jpg" and a "./" folder entry
    nested = {f"sub/{name}": data for name, data in files.items()}
    assert _keys(_gnu_tar(tmp_path / "sub", nested, "sub")) == [("sub/000", ["jpg", "txt"]), ("sub/a", ["b.jpg", "b.txt"])]
    assert split_key("./x/y.z.JPG") == ("x/y", "z.jpg") and split_key(".hidden") is None
    assert [match_key(k) for k in ("sub/000", "a.b", "./7", "abc")] == ["0", "a", "7", "abc"]


def test_dotted_key_members_resolve_by_their_last_extension() -> None:
    (sample,) = list(iter_tar_samples(io.BytesIO(make_tar([("a.b.jpeg", b"I"), ("a.b.txt", b"T")])), 100))
    assert sample.key == "a" and sample.field("txt").data == b"T"
    assert sample.image()[0] == "jpg" and sample.image()[1].data == b"I"  # .jpeg is exported as .jpg


def test_concatenated_archives_are_read_through(tmp_path: Path) -> None:
    first = _gnu_tar(tmp_path / "a", {"a.jpg": b"A" * 700, "a.txt": b"x"}, "a.jpg", "a.txt")
    second = _gnu_tar(tmp_path / "b", {"b.jpg": b"B" * 300, "b.txt": b"y"}, "b.jpg", "b.txt")
    raw = first + second + make_tar([("c.jpg", b"C")])  # GNU tar pads to 10 KiB records, tarfile too
    samples = list(iter_tar_samples(io.BytesIO(raw), 10_000))
    assert [s.key for s in samples] == ["a", "b", "c"]
    for sample, data in zip(samples, (b"A" * 700, b"B" * 300, b"C")):
        m = sample.members["jpg"]
        assert read_member(io.BytesIO(raw), m.offset, m.size) == data  # offsets from the file's start


def test_bytes_after_the_end_marker_that_are_no_tar_are_named() -> None:
    raw = make_tar([("a.jpg", b"1"), ("a.txt", b"2")])
    items = list(iter_tar_samples(io.BytesIO(raw + b"garbage" * 100), 100))
    assert [i.key for i in items[:-1]] == ["a"] and items[0].problem == "truncated_shard"
    assert f"700 unread bytes at offset {len(raw)}" in items[-1]


def test_links_and_unsafe_members_make_one_sample_with_one_reason() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in ("k.jpg", "k.txt"):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        info = tarfile.TarInfo("k.json")
        tar.addfile(info, io.BytesIO(b""))
    (sample,) = list(iter_tar_samples(io.BytesIO(buf.getvalue()), 100))
    assert (sample.key, sample.problem, sorted(sample.members)) == ("k", "unsafe_member_path", ["json"])
