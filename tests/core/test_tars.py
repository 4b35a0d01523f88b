"""Tar reading: grouping by key, offsets, unsafe names, truncation."""

from __future__ import annotations

import io
import tarfile

from pipeline.core.tars import TarSample, iter_tar_samples, read_member


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
    raw = make_tar([("../../evil.jpg", b"x"), ("/abs.jpg", b"y"), ("ok.jpg", b"z")])
    samples = [s for s in iter_tar_samples(io.BytesIO(raw), 1000) if isinstance(s, TarSample)]
    assert [(s.key, s.problem) for s in samples] == [
        ("../../evil.jpg", "unsafe_member_path"),
        ("/abs.jpg", "unsafe_member_path"),
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
