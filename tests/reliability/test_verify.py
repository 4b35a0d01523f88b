"""`curate verify`: passes on a real run's output, fails naming the shard on every kind of tampering."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.core.runner import RunResult
from pipeline.verify import verify_run


@pytest.fixture
def copy(bad_run: RunResult, tmp_path: Path) -> Path:
    """A copy of the bad-pool run's output and ledger, free to tamper with."""
    run = tmp_path / "run"
    shutil.copytree(bad_run.export_dir, run / "export")
    shutil.copy(Path(bad_run.export_dir).parent / "ledger.json", run / "ledger.json")
    return run


def rehash(run: Path, shard: str, count: int | None = None) -> None:
    """Make both manifests and sizes.json agree with the shard as it now is (a careful forger)."""
    data = (run / "export" / shard).read_bytes()
    for name in ("_manifest.json", "manifest.json"):
        path = run / "export" / name
        if not path.exists():
            continue
        manifest = json.loads(path.read_text())
        entries = manifest["counts"]["shards"] if name == "_manifest.json" else manifest["shards"]
        for entry in entries:
            if entry["shard"] == shard:
                entry.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest(), count=count or entry["count"])
        path.write_text(json.dumps(manifest))
    if count is not None:
        sizes = json.loads((run / "export" / "sizes.json").read_text())
        (run / "export" / "sizes.json").write_text(json.dumps({**sizes, shard: count}))


def members(path: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(path) as tar:
        return [(m, tar.extractfile(m).read()) for m in tar.getmembers()]


def write_members(path: Path, items: list[tuple[tarfile.TarInfo, bytes]]) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in items:
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())


def test_verify_passes_on_a_pipeline_output(bad_run: RunResult, capsys) -> None:
    run_dir = str(Path(bad_run.export_dir).parent)
    report = verify_run(run_dir)
    assert report.ok and report.samples == bad_run.ledger["kept"] and report.shards == 3
    assert main(["verify", run_dir]) == 0
    assert capsys.readouterr().out.strip().endswith(f"{report.samples} samples, {report.bytes} bytes: OK")


def test_flipped_image_byte_is_found_even_with_forged_hashes(copy: Path, capsys) -> None:
    tar = copy / "export" / "00001.tar"
    items = members(tar)
    info, image = next((i, d) for i, d in items if i.name.endswith((".jpg", ".png", ".webp")))
    flipped = bytes([image[0], image[1], image[2] ^ 1]) + image[3:]
    write_members(tar, [(i, flipped if i is info else d) for i, d in items])
    rehash(copy, "00001.tar")
    problems = verify_run(str(copy)).problems
    assert problems == [f"00001.tar: sample {info.name.split('.')[0]}: image sha256 != uid "
                        f"{hashlib.sha256(image).hexdigest()}"]
    assert main(["verify", str(copy)]) == 1
    assert "curate verify: 00001.tar: sample" in capsys.readouterr().err


def test_deleted_member_is_found(copy: Path) -> None:
    tar = copy / "export" / "00000.tar"
    items = members(tar)
    dropped = items[1][0].name
    write_members(tar, [(i, d) for i, d in items if i.name != dropped])
    problems = verify_run(str(copy)).problems
    assert any(p.startswith("00000.tar: sha256") for p in problems)
    assert any(p.startswith(f"00000.tar: sample {dropped.split('.')[0]}: members") for p in problems)


def test_truncated_tar_is_found(copy: Path) -> None:
    tar = copy / "export" / "00002.tar"
    data = tar.read_bytes()
    tar.write_bytes(data[: len(data) // 2])
    problems = verify_run(str(copy)).problems
    assert f"00002.tar: {len(data) // 2} bytes, manifest says {len(data)}" in problems
    assert any(p.startswith("00002.tar: unreadable tar") for p in problems)


def test_a_uid_in_two_shards_is_found(copy: Path) -> None:
    export = copy / "export"
    shutil.copy(export / "00000.tar", export / "00002.tar")
    shutil.copy(export / "00000.parquet", export / "00002.parquet")
    rehash(copy, "00002.tar", count=json.loads((export / "sizes.json").read_text())["00000.tar"])
    problems = verify_run(str(copy)).problems
    assert any(p.startswith("00002.tar: uid ") and p.endswith("also in 00000.tar") for p in problems)


def test_unfinished_export_fails(copy: Path) -> None:
    (copy / "export" / "_SUCCESS").unlink()
    assert verify_run(str(copy)).problems == [f"{copy}/export: export is not finished (no _SUCCESS)"]
