"""The run report: its numbers against the run's own tables, and the page rendered by headless
Chromium (every plot section present and drawn; a screenshot kept in test-artifacts/)."""

from __future__ import annotations

import json
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.report.page import SECTIONS, render
from tests.output.conftest import N_CLUSTERS, FullRun

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
MARKS = {"rect", "circle", "img"}


class SectionScan(HTMLParser):
    """Per `<section id=...>`: how many drawn marks (rect, circle, img) and `.empty` notes it holds."""

    def __init__(self) -> None:
        super().__init__()
        self.current: str | None = None
        self.depth = 0
        self.marks: dict[str, int] = {}
        self.empty: dict[str, int] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section" and a.get("id"):
            self.current, self.depth = a["id"], 0
            self.marks[self.current], self.empty[self.current] = 0, 0
        if self.current is None:
            return
        if tag == "section":
            self.depth += 1
        if tag in MARKS:
            self.marks[self.current] += 1
        if a.get("class") == "empty":
            self.empty[self.current] += 1

    def handle_endtag(self, tag: str) -> None:
        if self.current is not None and tag == "section":
            self.depth -= 1
            if self.depth == 0:
                self.current = None


def scan(html: str) -> SectionScan:
    parser = SectionScan()
    parser.feed(html)
    return parser


def chromium(*args: str, user_dir: Path) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={user_dir}"]
    return subprocess.run([str(CHROMIUM), *flags, *args], capture_output=True, text=True, timeout=180)


def read_dir(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def test_report_numbers_match_the_run(full_run: FullRun) -> None:
    report = json.loads((full_run.run_dir / "report.json").read_text())
    ledger = full_run.ledger
    assert report["ledger"] == json.loads((full_run.run_dir / "ledger.json").read_text())
    flow = report["flow"]
    assert [r["stage"] for r in flow] == ["ingest", "basic_filter", "exact_dedup", "embed", "kept"]
    for before, after in zip(flow, flow[1:]):
        assert after["in"] == before["in"] - sum(before["removed"].values())
    assert flow[0]["in"] == ledger["input"] and flow[-1]["in"] == ledger["kept"]

    assert [r["stage"] for r in report["stages"]] == [s.name for s in full_run.stages]
    assert [r["seconds"] for r in report["stages"]] == [full_run.manifests[s.name]["seconds"] for s in full_run.stages]
    assert report["stages"][-1]["samples"] == ledger["kept"]

    clusters = report["clusters"]
    assigned = read_dir(full_run.run_dir / "cluster" / "assignments")
    assert clusters["k"] == N_CLUSTERS
    assert sum(c["size"] for c in clusters["clusters"]) == len(assigned)
    assert sum(c["kept"] for c in clusters["clusters"]) == ledger["kept"]
    assert sum(clusters["size_histogram"]["counts"]) == N_CLUSTERS

    clip = report["clip_score"]
    embedded = read_dir(full_run.run_dir / "embed" / "parts")
    assert sum(clip["kept"]) + sum(clip["removed"]) == len(embedded)
    scores = [r["clip_score"] for r in embedded]
    assert clip["edges"][0] == pytest.approx(min(scores)) and clip["edges"][-1] == pytest.approx(max(scores))

    removed = ledger["removed"]
    for h in report["scores"]:
        assert sum(h["counts"]) == removed[h["stage"]][h["reason"]]
    assert {(h["stage"], h["reason"]): h["threshold"] for h in report["scores"]} == {
        ("basic_filter", "aspect_ratio"): 3.0, ("basic_filter", "caption_too_short"): 3,
        ("basic_filter", "image_too_small"): 32}
    (dups,) = report["duplicates"]
    assert (dups["stage"], dups["reason"]) == ("exact_dedup", "exact_duplicate")
    assert dups["removed"] == removed["exact_dedup"]["exact_duplicate"]

    thumbs = report["thumbnails"]
    expected = {"kept"} | {f"{s}: {r}" for s, reasons in removed.items() for r in reasons} | {
        f"quarantined: {r}" for r in ledger["quarantined"]}
    assert set(thumbs) == expected
    assert all(0 < len(samples) <= 12 for samples in thumbs.values())
    assert all(s["has_image"] for s in thumbs["kept"])
    assert not any(s["has_image"] for s in thumbs["quarantined: failed_to_download"])


def test_report_describes_the_output_set_beside_what_was_removed(full_run: FullRun) -> None:
    report = json.loads((full_run.run_dir / "report.json").read_text())
    ledger = full_run.ledger
    usable = ledger["input"] - sum(ledger["quarantined"].values())
    stats = report["samples"]
    assert [m["metric"] for m in stats["metrics"]] == ["short_side", "aspect_ratio", "caption_chars"]
    kept_rows = [r for p in sorted(Path(full_run.export_dir).glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    for m in stats["metrics"]:
        assert sum(m["kept"]) == ledger["kept"] and sum(m["kept"]) + sum(m["removed"]) == usable, m["metric"]
    short = stats["metrics"][0]
    sides = np.array([min(r["width"], r["height"]) for r in kept_rows], dtype=float)
    for q, value in short["quantiles"]["kept"].items():
        assert value == pytest.approx(np.percentile(sides, float(q) * 100)), q
    assert min(short["quantiles"]["kept"].values()) >= 32  # basic_filter.min_side
    assert sum(v["kept"] for v in stats["formats"].values()) == ledger["kept"]
    assert sum(v["kept"] + v["removed"] for v in stats["formats"].values()) == usable
    assert stats["languages"] is None

    by_reason = {(h["stage"], h["reason"]): h for h in report["scores"]}
    small = by_reason[("basic_filter", "image_too_small")]
    assert small["label"] == "shorter side (pixels)"
    assert sum(small["kept"]) == ledger["kept"]  # every kept sample scored by the same rule
    below = [i for i, hi in enumerate(small["edges"][1:]) if hi <= 32]
    assert below and all(small["kept"][i] == 0 for i in below) and sum(small["counts"][i] for i in below) > 0


def test_a_run_without_clusters_or_scores_says_so_in_each_section(full_run: FullRun) -> None:
    data = json.loads((full_run.run_dir / "report.json").read_text())
    data.update(clusters=None, clip_score=None, scores=[], duplicates=[])
    page = scan(render(data, {g: [None] * len(s) for g, s in data["thumbnails"].items()}))
    assert set(page.marks) == set(SECTIONS)
    for sid in ("plot-cluster-sizes", "plot-cluster-kept", "plot-clip-score", "plot-scores", "plot-duplicates"):
        assert page.empty[sid] == 1 and page.marks[sid] == 0, sid
    assert page.marks["plot-ledger"] > 0 and page.empty["plot-ledger"] == 0


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium_with_every_plot(full_run: FullRun, tmp_path: Path) -> None:
    url = full_run.report.as_uri()
    dom = chromium("--dump-dom", url, user_dir=tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = scan(dom.stdout)
    assert set(page.marks) == set(SECTIONS)
    for sid in SECTIONS:
        assert page.marks[sid] > 0 and page.empty[sid] == 0, (sid, page.marks[sid], page.empty[sid])
    report = json.loads((full_run.run_dir / "report.json").read_text())
    assert dom.stdout.count("<img ") == sum(s["has_image"] for g in report["thumbnails"].values() for s in g)

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    done = chromium(f"--screenshot={shot}", "--window-size=1280,4000", url, user_dir=tmp_path / "profile-shot")
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 4000)
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 200  # plots and thumbnails drawn, not a blank page
