"""Object storage: input on S3 (moto's real S3 server on loopback), the `storage_options` section
reaching every Spark task, secrets kept out of everything written, and a `run_dir` that Spark's
Hadoop cannot open refused before anything is written."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.core import io
from pipeline.core.config import ConfigError, config_from_dict
from pipeline.core.runner import run_pipeline
from pipeline.core.stage import RunContext

moto_server = pytest.importorskip("moto.server")

ROOT = Path(__file__).resolve().parents[1]
CURATE = Path(sys.executable).with_name("curate")
SECRET = "never-written-4f1c9a"  # the secret key the S3 client signs with


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1; yields its endpoint URL."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=free_port())
    server.start()
    host, port = server._server.server_address[:2]
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_credentials(monkeypatch) -> None:
    """Credentials as users give them: in the environment (this process only)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def bucket_fs(endpoint: str) -> fsspec.AbstractFileSystem:
    return fsspec.filesystem("s3", endpoint_url=endpoint, skip_instance_cache=True)


def upload(endpoint: str, local: Path, url: str) -> None:
    fs = bucket_fs(endpoint)
    bucket = url.removeprefix("s3://").split("/")[0]
    if not fs.exists(bucket):
        fs.mkdir(bucket)
    fs.put(f"{local}/", url.removeprefix("s3://"), recursive=True)


def test_storage_options_reach_every_spark_task(spark, tmp_path: Path) -> None:
    cfg = config_from_dict({"input": str(tmp_path), "run_dir": str(tmp_path / "run"),
                            "storage_options": {"endpoint_url": "http://127.0.0.1:9000", "region": "eu-west-1",
                                                "options": {"gs": {"project": "p"}}}})
    expected = {"s3": {"endpoint_url": "http://127.0.0.1:9000", "client_kwargs": {"region_name": "eu-west-1"}},
                "s3a": {"endpoint_url": "http://127.0.0.1:9000", "client_kwargs": {"region_name": "eu-west-1"}},
                "gs": {"project": "p"}}
    assert cfg.storage_options.by_protocol() == expected
    RunContext(cfg=cfg, spark=spark)
    assert io.storage_options() == expected
    seen = spark.sparkContext.parallelize(range(4), 4).map(lambda _: io.storage_options()).collect()
    assert seen == [expected] * 4
    # and in DataFrame tasks (mapInArrow), as the embed and cluster stages run
    def options_column(batches):
        for batch in batches:
            yield pa.RecordBatch.from_pydict({"o": pa.array([json.dumps(io.storage_options())] * len(batch))})

    shown = spark.range(3).repartition(3).mapInArrow(options_column, "o string").collect()
    assert {json.loads(r["o"])["s3"]["endpoint_url"] for r in shown} == {"http://127.0.0.1:9000"}
    RunContext(cfg=config_from_dict({"input": str(tmp_path), "run_dir": str(tmp_path / "run")}), spark=spark)
    assert spark.sparkContext.parallelize([0], 1).map(lambda _: io.storage_options()).collect() == [{}]


@pytest.mark.parametrize("key", ["secret", "key", "aws_secret_access_key", "token", "password"])
def test_credentials_in_storage_options_are_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"storage_options\.options\.s3\.{key}': credentials are read from the env"):
        config_from_dict({"input": str(tmp_path), "run_dir": str(tmp_path / "run"),
                          "storage_options": {"options": {"s3": {key: "x"}}}})


def test_a_url_without_its_fsspec_filesystem_names_what_to_install() -> None:
    if importlib.util.find_spec("gcsfs") is None:  # the [s3] case is checked by `make wheel-check`
        with pytest.raises(io.InputError, match=r"^'gs://b/x': no fsspec filesystem for gs:// is installed \(.*gcsfs"):
            io.filesystem("gs://b/x")
    with pytest.raises(io.InputError, match=r"^'nosuch://b/x': Protocol not known: nosuch$"):
        io.filesystem("nosuch://b/x")


def test_run_dir_spark_cannot_open_is_refused_before_anything_is_written(
    spark, s3: str, s3_credentials, demo_dir: Path
) -> None:
    upload(s3, demo_dir / "shards", "s3://refuse/pool")
    cfg = config_from_dict({"input": "s3://refuse/pool", "run_dir": "s3a://refuse/run",
                            "storage_options": {"endpoint_url": s3}})
    with pytest.raises(ConfigError) as err:
        run_pipeline(cfg)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("run_dir 's3a://refuse/run': this Spark cannot open s3a:// URLs")
    assert "hadoop-aws" in message
    assert not bucket_fs(s3).exists("refuse/run")  # not even config.yaml


def curate(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(CURATE), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def files_under(*roots: Path) -> Iterator[Path]:
    for root in roots:
        yield from (p for p in root.rglob("*") if p.is_file())


@pytest.mark.slow
def test_s3_input_end_to_end_ingest_embed_export_verify_and_contain(
    spark, s3: str, s3_credentials, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    from pipeline.demo.generate import make_demo_data

    demo = tmp_path / "demo"
    make_demo_data(demo, n_samples=150, samples_per_shard=50, seed=2)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FSSPEC_", "PYSPARK_GATEWAY", "SPARK_"))}
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY=SECRET, AWS_DEFAULT_REGION="us-east-1")
    upload(s3, demo / "shards", "s3://pool/a")
    upload(s3, demo / "shards", "s3://pool/b")
    bucket_fs(s3).rm("pool/b/00001.tar")  # B: A without its second shard

    def config(input_spec: str, run_dir: Path) -> dict:
        return {"input": input_spec, "run_dir": str(run_dir), "seed": 1, "basic_filter": {"min_side": 32},
                "embed": {"enabled": True, "model": {"arch": "curate-tiny", "pretrained": str(tiny_checkpoint)},
                          "batch_size": 32},
                "export": {"samples_per_shard": 40}, "storage_options": {"endpoint_url": s3}}

    cfg_path = tmp_path / "s3.yaml"
    cfg_path.write_text(yaml.safe_dump(config("s3://pool/a", tmp_path / "s3-run")))
    run = curate("run", str(cfg_path), env=env, cwd=tmp_path)
    verify = curate("verify", str(tmp_path / "s3-run"), env=env, cwd=tmp_path)
    contain = curate("contain", "s3://pool/a", "s3://pool/b", "--config", str(cfg_path), "--out",
                     str(tmp_path / "contain"), env=env, cwd=tmp_path)

    # the S3 run equals the same pool read from local disk, shard for shard
    local = run_pipeline(config_from_dict(config(str(demo / "shards"), tmp_path / "local-run")))
    assert local.manifests["embed"]["counts"]["embedded"] > 0
    s3_export, local_export = tmp_path / "s3-run" / "export", tmp_path / "local-run" / "export"
    tars = sorted(p.name for p in local_export.glob("*.tar"))
    assert len(tars) >= 2 and sorted(p.name for p in s3_export.glob("*.tar")) == tars
    assert all((s3_export / t).read_bytes() == (local_export / t).read_bytes() for t in tars)
    s3_ledger = json.loads((tmp_path / "s3-run" / "ledger.json").read_text())
    assert s3_ledger == local.ledger and s3_ledger["input"] == 150
    assert verify.stdout.strip().endswith(f"{s3_ledger['kept']} samples, "
                                          f"{sum((s3_export / t).stat().st_size for t in tars)} bytes: OK")

    summary = json.loads((tmp_path / "contain" / "containment.json").read_text())
    by_shard = {r["shard"]: r for r in pq.read_table(tmp_path / "contain" / "containment_by_shard.parquet").to_pylist()}
    assert by_shard["00000"]["exact_fraction"] == by_shard["00002"]["exact_fraction"] == 1.0
    assert by_shard["00000"]["semantic_fraction"] == 1.0
    assert 0 < summary["exact_fraction"] < 1

    # the secret signed every request and appears in nothing written or printed
    outputs = [run.stdout, run.stderr, verify.stdout, verify.stderr, contain.stdout, contain.stderr]
    assert not [o for o in outputs if SECRET in o]
    leaked = [p for p in files_under(tmp_path / "s3-run", tmp_path / "contain") if SECRET.encode() in p.read_bytes()]
    assert not leaked, leaked
    saved = yaml.safe_load((tmp_path / "s3-run" / "config.yaml").read_text())
    assert saved["storage_options"]["endpoint_url"] == s3
