"""Broken input through the real pipeline: each defect gets a quarantine reason or one clear error,
nothing else in the run is lost, and the ledger balances."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.cli import main
from pipeline.core.runner import RunResult
from pipeline.imaging import ImageRejected, probe_image
from pipeline.verify import verify_run
from tests.reliability.conftest import bad_pool_config
from tests.reliability.pool import Pool, jpeg_declaring, png_declaring


@pytest.fixture(scope="module")
def ingested(bad_run: RunResult) -> dict[str, dict]:
    table = pq.read_table(Path(bad_run.export_dir).parent / "ingest" / "parts")
    return {r["sample_id"]: r for r in table.to_pylist()}


@pytest.fixture(scope="module")
def exported(bad_run: RunResult) -> dict[str, dict]:
    files = sorted(Path(bad_run.export_dir).glob("*.parquet"))
    return {r["sample_id"]: r for f in files for r in pq.read_table(f).to_pylist()}


def check_shard(name: str, pool: Pool, ingested: dict, exported: dict) -> None:
    """Every row of the shard has the expected reason; its usable samples are in the output, intact."""
    want = pool.of_shard(name)
    got = {sid: row["quarantine_reason"] for sid, row in ingested.items() if row["shard_name"] == name}
    assert got == want
    for sample_id, reason in want.items():
        if reason is None:
            assert exported[sample_id]["uid"] == pool.uids[sample_id], sample_id
        else:
            assert sample_id not in exported


def test_ledger_accounts_for_every_row_and_output_verifies(bad_run: RunResult, bad_pool: Pool, exported) -> None:
    ledger = bad_run.ledger
    reasons = Counter(r for r in bad_pool.expected.values() if r is not None)
    assert ledger["input"] == len(bad_pool.expected)
    assert ledger["quarantined"] == dict(reasons)
    assert ledger["removed"] == {"basic_filter": {}, "exact_dedup": {}}
    assert ledger["kept"] == len(bad_pool.uids) == len(exported)
    assert set(exported) == set(bad_pool.uids)
    assert verify_run(str(Path(bad_run.export_dir).parent)).problems == []


def test_good_shard_is_untouched(bad_pool, ingested, exported) -> None:
    check_shard("good", bad_pool, ingested, exported)


def test_tar_truncated_inside_a_member(bad_run: RunResult, bad_pool, ingested, exported) -> None:
    check_shard("truncated_mid", bad_pool, ingested, exported)
    assert "unexpected end of data" in bad_run.manifests["ingest"]["counts"]["tar_errors"]["truncated_mid"]


def test_tar_truncated_between_members_is_noticed(bad_run: RunResult, bad_pool, ingested, exported) -> None:
    check_shard("truncated_end", bad_pool, ingested, exported)
    assert "no end-of-archive marker" in bad_run.manifests["ingest"]["counts"]["tar_errors"]["truncated_end"]


def test_unsafe_member_paths_and_links_are_quarantined_never_extracted(bad_pool: Pool, ingested, exported) -> None:
    check_shard("unsafe", bad_pool, ingested, exported)
    assert {ingested[f"unsafe/{n}"]["uid"] for n in ("../../x", "/etc/x", "evil", "hard")} == {None}
    assert not (bad_pool.shards.parent / "x.jpg").exists() and not Path("/etc/x.jpg").exists()


def test_empty_corrupt_and_foreign_images(bad_pool, ingested, exported) -> None:
    check_shard("images", bad_pool, ingested, exported)


def test_decompression_bombs_and_oversized_images(bad_pool, ingested, exported) -> None:
    check_shard("bomb", bad_pool, ingested, exported)
    assert ingested["bomb/b1"]["width"] is None and ingested["bomb/b3"]["image_bytes"] > 200_000


def test_bomb_is_rejected_from_its_header_without_decoding() -> None:
    for data in (png_declaring(100_000, 100_000), jpeg_declaring(65_000, 65_000, seed=1)):
        started = time.perf_counter()
        with pytest.raises(ImageRejected) as err:
            probe_image(data, max_pixels=89_478_485)
        assert err.value.reason == "too_many_pixels"
        assert time.perf_counter() - started < 0.5  # decoding 4-10 gigapixels would take minutes


def test_eps_is_not_handed_to_ghostscript() -> None:
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\nnewpath 0 0 moveto 64 64 lineto stroke\nshowpage\n"
    with pytest.raises(ImageRejected) as err:
        probe_image(eps, max_pixels=10**6)
    assert err.value.reason == "decode_error" and "cannot identify" in str(err.value)


def test_non_utf8_and_1mb_captions(bad_pool, ingested, exported) -> None:
    check_shard("captions", bad_pool, ingested, exported)


def test_parquet_that_does_not_match_the_tar(bad_pool, ingested, exported) -> None:
    check_shard("mismatch", bad_pool, ingested, exported)


def test_unreadable_parquet_keeps_the_tar_samples(bad_run: RunResult, bad_pool, ingested, exported) -> None:
    check_shard("garbage_parquet", bad_pool, ingested, exported)
    assert list(bad_run.manifests["ingest"]["counts"]["parquet_errors"]) == ["garbage_parquet"]


def test_missing_parquet_and_stats(bad_pool, ingested, exported) -> None:
    check_shard("no_parquet", bad_pool, ingested, exported)
    check_shard("no_stats", bad_pool, ingested, exported)


def test_duplicate_keys_inside_a_shard(bad_pool, ingested, exported) -> None:
    check_shard("dup_keys", bad_pool, ingested, exported)


def test_empty_shard(bad_run: RunResult, bad_pool, ingested) -> None:
    assert not any(r["shard_name"] == "empty" for r in ingested.values())
    assert bad_run.manifests["ingest"]["counts"]["shards"] == len(list(bad_pool.shards.glob("*.tar")))
    stats = yaml.safe_load((Path(bad_run.export_dir).parent / "ingest" / "shard_stats" / "empty.json").read_text())
    assert (stats["input"], stats["tar_error"], stats["parquet_error"]) == (0, None, None)


def test_input_glob_matching_nothing_is_one_error_and_writes_nothing(tmp_path: Path, capsys) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"input": str(tmp_path / "nowhere" / "*.tar"), "run_dir": str(tmp_path / "run")}))
    assert main(["run", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"curate: error: input '{tmp_path / 'nowhere' / '*.tar'}' matches no .tar shards"]
    assert not (tmp_path / "run").exists()


def _delete_when(marker: Path, victim: Path, deadline: float) -> None:
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.01)
    victim.unlink()


@pytest.mark.parametrize("reader", ["export", "embed"])
def test_shard_disappearing_after_ingest_stops_the_run_naming_it(spark, tmp_path: Path, capsys, reader: str,
                                                                tiny_checkpoint: Path) -> None:
    """Export and embed read images back from the source tars: a tar gone since ingest is one error
    naming it (for embed the first stage to read it; for export with no model stage before it)."""
    pool = Pool(tmp_path / "shards")
    for name in ("keep0", "gone", "keep1"):
        shard = pool.shard(name)
        for i in range(4):
            shard.good(f"{name}-{i}")
        shard.write()
    run_dir = tmp_path / "run"
    config = tmp_path / "run.yaml"
    model = {"embed": {"enabled": True, "model": {"arch": "curate-tiny", "pretrained": str(tiny_checkpoint)}},
             "steps": ["dfn"], "dfn": {"threshold": -1.0}}
    config.write_text(yaml.safe_dump(bad_pool_config(pool, run_dir, **(model if reader == "embed" else {}))))
    gone = pool.shards / "gone.tar"
    watcher = threading.Thread(target=_delete_when, args=(run_dir / "ingest" / "_SUCCESS", gone, time.time() + 120))
    watcher.start()
    try:
        assert main(["run", str(config)]) == 2
    finally:
        watcher.join()
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("curate: error")]
    assert len(err) == 1 and f"source shard {gone} is gone since ingest" in err[0], err
    assert not (run_dir / "export").exists() and not (run_dir / "ledger.json").exists()

    assert main(["run", str(config)]) == 0  # a rerun ingests what is there now; nothing else lost
    ledger = yaml.safe_load((run_dir / "ledger.json").read_text())
    assert ledger["input"] == ledger["kept"] == 8
    assert verify_run(str(run_dir)).ok
