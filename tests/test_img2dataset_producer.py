"""Ingest on shards written by the real img2dataset (1.47), fully offline.

A local `ThreadingHTTPServer` on 127.0.0.1 serves ~40 generated images; a URL list with those URLs
plus a few dead ones (404s on the same server, one on a closed local port) is downloaded by
`img2dataset.download(...)` into WebDataset shards. The pipeline then runs on that folder and the
ledger, the quarantine reasons and the exported tars are checked against img2dataset's own parquet.
"""

from __future__ import annotations

import colorsys
import functools
import glob
import hashlib
import io as pyio
import json
import os
import signal
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image, ImageDraw

from pipeline.core.config import config_from_dict
from pipeline.core.runner import RunResult, run_pipeline

N_IMAGES = 40
N_MISSING = 5  # 404s on the live server; plus one URL on a closed port
PER_SHARD = 16
RESIZE_TO = 48  # img2dataset resizes the short side to this (keep_ratio)
SHAPES = ("disc", "square", "triangle", "ring", "cross")
PROXY_VARS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")

pytestmark = pytest.mark.filterwarnings("ignore:'imghdr' is deprecated:DeprecationWarning")


@dataclass(frozen=True)
class Served:
    """The local image server: its base URL and the images it serves (file name -> caption)."""

    base_url: str
    captions: dict[str, str]


@dataclass(frozen=True)
class Downloaded:
    """img2dataset's output folder and the URL list it was given."""

    folder: Path
    captions: dict[str, str]  # url -> caption, for every row of the URL list
    live: frozenset[str]
    dead: frozenset[str]


class QuietHandler(SimpleHTTPRequestHandler):
    """Static file handler that does not log every request to stderr."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


def closed_local_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound once by the OS, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_image(index: int) -> Image.Image:
    """A small image unique to `index`: its own size, background hue, shape, position and stripes."""
    width = 64 + (index * 7) % 33  # 64..96
    height = 64 + (index * 13) % 33  # 64..96, aspect <= 1.5
    hue = (index * 0.618034) % 1.0
    bg = tuple(int(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.35 + 0.5 * (index % 3) / 2, 0.95))
    fg = tuple(int(255 * c) for c in colorsys.hsv_to_rgb((hue + 0.5) % 1.0, 0.9, 0.35 + 0.15 * (index % 4)))
    image = Image.new("RGB", (width, height), bg)
    draw = ImageDraw.Draw(image)
    cx, cy = 16 + (index * 5) % (width - 32), 16 + (index * 11) % (height - 32)
    r = 10 + index % 6
    shape = SHAPES[index % len(SHAPES)]
    if shape == "disc":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fg)
    elif shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fg)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fg)
    elif shape == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=fg, width=4)
    else:
        draw.line((cx - r, cy, cx + r, cy), fill=fg, width=5)
        draw.line((cx, cy - r, cx, cy + r), fill=fg, width=5)
    for k in range(index % 4 + 1):  # a few stripes so no two images share a layout
        y = (k * 17 + index * 3) % height
        draw.line((0, y, width, (y + index) % height), fill=fg, width=2)
    return image


def write_images(folder: Path, count: int) -> dict[str, str]:
    """Write `count` JPEG/PNG images to `folder`; return file name -> a unique caption of 5+ words."""
    captions: dict[str, str] = {}
    for i in range(count):
        ext = "jpg" if i % 2 == 0 else "png"
        name = f"img_{i:03d}.{ext}"
        image = make_image(i)
        if ext == "jpg":
            image.save(folder / name, format="JPEG", quality=90)
        else:
            image.save(folder / name, format="PNG")
        shape = SHAPES[i % len(SHAPES)]
        captions[name] = f"a {shape} drawn on colour card number {i}"
    return captions


def url_rows(served: Served, dead_port: int) -> list[dict[str, str]]:
    """The URL list: every live image, with the dead URLs spread among them (so in several shards)."""
    rows = [{"url": f"{served.base_url}/{name}", "caption": cap} for name, cap in served.captions.items()]
    dead = [
        {"url": f"{served.base_url}/missing/gone_{j}.jpg", "caption": f"a picture that went missing {j}"}
        for j in range(N_MISSING)
    ]
    dead.append({"url": f"http://127.0.0.1:{dead_port}/nobody_home.jpg", "caption": "a server that is down"})
    for j, row in enumerate(dead):
        rows.insert(1 + j * 8, row)
    return rows


def read_parquets(folder: Path) -> list[dict[str, Any]]:
    """All rows of img2dataset's per-shard parquets, in shard order."""
    rows: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.parquet")):
        rows += pq.read_table(path).to_pylist()
    return rows


def read_webdataset(pattern: str) -> list[dict[str, Any]]:
    """Every sample of a WebDataset shard pattern, read with the webdataset library (raw bytes)."""
    return list(wds.WebDataset(pattern, shardshuffle=False))


def tar_pattern(folder: Path) -> str:
    """A brace pattern naming every tar of `folder`, e.g. `dir/{00000,00001}.tar`."""
    stems = sorted(p.stem for p in folder.glob("*.tar"))
    return f"{folder}/{{{','.join(stems)}}}.tar" if len(stems) > 1 else f"{folder}/{stems[0]}.tar"


def image_member(sample: dict[str, Any]) -> bytes:
    """The image bytes of a webdataset sample (whatever its extension)."""
    exts = [e for e in ("jpg", "jpeg", "png", "webp") if e in sample]
    assert len(exts) == 1, f"sample {sample['__key__']} has image members {exts}"
    return sample[exts[0]]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Generated images served over HTTP on 127.0.0.1 from a background thread."""
    root = tmp_path_factory.mktemp("www")
    captions = write_images(root, N_IMAGES)
    handler = functools.partial(QuietHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="img-server", daemon=True)
    thread.start()
    try:
        yield Served(base_url=f"http://127.0.0.1:{server.server_address[1]}", captions=captions)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def downloaded(served: Served, tmp_path_factory: pytest.TempPathFactory) -> Downloaded:
    """Run the real img2dataset on the URL list; return its output folder."""
    work = tmp_path_factory.mktemp("i2d")
    rows = url_rows(served, closed_local_port())
    url_list = work / "urls.parquet"
    pq.write_table(pa.Table.from_pylist(rows), url_list)
    out = work / "shards"  # must not exist yet: img2dataset resumes into an existing folder
    sigint = signal.getsignal(signal.SIGINT)  # img2dataset installs its own SIGINT handler
    try:
        with pytest.MonkeyPatch.context() as mp:
            for var in PROXY_VARS:  # urllib must go straight to 127.0.0.1, never through a proxy
                mp.delenv(var, raising=False)
            mp.setenv("no_proxy", "127.0.0.1,localhost")
            # albumentations (imported by img2dataset's resizer, here and in each spawned worker)
            # otherwise asks PyPI for a newer version at import: a network call outside 127.0.0.1
            mp.setenv("NO_ALBUMENTATIONS_UPDATE", "1")
            import img2dataset

            img2dataset.download(
                url_list=str(url_list),
                output_folder=str(out),
                input_format="parquet",
                url_col="url",
                caption_col="caption",
                output_format="webdataset",
                image_size=RESIZE_TO,
                resize_mode="keep_ratio",
                processes_count=1,
                thread_count=4,
                number_sample_per_shard=PER_SHARD,
                timeout=5,
                retries=0,
                enable_wandb=False,
                distributor="multiprocessing",
            )
    finally:
        signal.signal(signal.SIGINT, sigint)
    live = frozenset(f"{served.base_url}/{name}" for name in served.captions)
    all_urls = {r["url"]: r["caption"] for r in rows}
    return Downloaded(folder=out, captions=all_urls, live=live, dead=frozenset(all_urls) - live)


def test_img2dataset_wrote_real_shards(downloaded: Downloaded) -> None:
    """img2dataset produced tars, parquets and stats, with the dead URLs as failed_to_download rows."""
    folder = downloaded.folder
    n_shards = -(-len(downloaded.captions) // PER_SHARD)
    tars = sorted(p.name for p in folder.glob("*.tar"))
    assert tars == [f"{i:05d}.tar" for i in range(n_shards)]
    assert sorted(p.name for p in folder.glob("*.parquet")) == [f"{i:05d}.parquet" for i in range(n_shards)]
    assert sorted(p.name for p in folder.glob("*_stats.json")) == [f"{i:05d}_stats.json" for i in range(n_shards)]

    rows = read_parquets(folder)
    assert {"key", "url", "caption", "status", "error_message", "width", "height"} <= set(rows[0])
    assert len(rows) == len(downloaded.captions)
    by_status: dict[str, set[str]] = {}
    for r in rows:
        by_status.setdefault(r["status"], set()).add(r["url"])
    assert by_status == {"success": set(downloaded.live), "failed_to_download": set(downloaded.dead)}
    assert all(r["error_message"] for r in rows if r["status"] == "failed_to_download")

    stats = [json.loads(p.read_text()) for p in sorted(folder.glob("*_stats.json"))]
    assert sum(s["count"] for s in stats) == len(downloaded.captions)
    assert sum(s["failed_to_download"] for s in stats) == len(downloaded.dead)
    assert sum(s["successes"] for s in stats) == len(downloaded.live)

    samples = read_webdataset(tar_pattern(folder))
    assert len(samples) == len(downloaded.live)
    assert {len(s["__key__"]) for s in samples} == {5 + 2}  # oom_shard_count + ceil(log10(PER_SHARD))
    assert all(min(Image.open(pyio.BytesIO(image_member(s))).size) == RESIZE_TO for s in samples)
    # unique by construction, even after img2dataset re-encoded them: exact dedup must remove nothing
    assert len({hashlib.sha256(image_member(s)).digest() for s in samples}) == len(downloaded.live)


def test_pipeline_ingests_img2dataset_output(spark: Any, downloaded: Downloaded, tmp_path: Path) -> None:
    """The run keeps every live image, quarantines the dead URLs, balances and exports readable tars."""
    i2d_rows = read_parquets(downloaded.folder)
    statuses = Counter(r["status"] for r in i2d_rows)
    failed = {s: n for s, n in statuses.items() if s != "success"}
    assert failed == {"failed_to_download": len(downloaded.dead)}

    cfg = config_from_dict(
        {
            "input": str(downloaded.folder),
            "run_dir": str(tmp_path / "run"),
            "spark": {"master": "local[2]", "log_level": "ERROR"},
            "basic_filter": {"min_side": RESIZE_TO // 2},
            "export": {"samples_per_shard": PER_SHARD},
        }
    )
    result: RunResult = run_pipeline(cfg)
    ledger = result.ledger

    assert ledger["input"] == len(downloaded.captions) == len(i2d_rows)
    assert ledger["quarantined"] == failed
    assert ledger["kept"] == len(downloaded.live)
    removed = sum(sum(reasons.values()) for reasons in ledger["removed"].values())
    assert removed == 0, ledger["removed"]
    assert ledger["input"] == ledger["kept"] + removed + sum(ledger["quarantined"].values())
    assert json.loads((tmp_path / "run" / "ledger.json").read_text()) == ledger
    assert result.manifests["ingest"]["counts"]["shards"] == len(list(downloaded.folder.glob("*.tar")))

    source = read_webdataset(tar_pattern(downloaded.folder))
    source_images = {json.loads(s["json"])["url"]: image_member(s) for s in source}
    exported = read_webdataset(result.pattern)
    assert len(exported) == len(downloaded.live)
    urls = [json.loads(s["json"])["url"] for s in exported]
    assert sorted(urls) == sorted(downloaded.live)
    for sample, url in zip(exported, urls, strict=True):
        assert sample["txt"].decode("utf-8") == downloaded.captions[url]
        assert json.loads(sample["json"])["caption"] == downloaded.captions[url]
        data = image_member(sample)
        assert data == source_images[url], f"exported bytes of {url} differ from img2dataset's"
        assert hashlib.sha256(data).hexdigest() == json.loads(sample["json"])["uid"]
    assert len(glob.glob(os.path.join(result.export_dir, "*.tar"))) == -(-len(downloaded.live) // PER_SHARD)
