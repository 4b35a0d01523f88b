"""Untrusted data can't escape: secrets are never written, configs can't point the run at its input,
and the product never unpickles, evals or yaml.loads anything."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from pipeline.cli import main
from pipeline.core.config import ConfigError, config_from_dict
from pipeline.core.redact import REDACTED, is_secret_key
from tests.reliability.pool import Pool

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {
    "spark.hadoop.fs.s3a.access.key": "AKIAEXAMPLEACCESS0001",
    "spark.hadoop.fs.s3a.secret.key": "s3cr3t/ExampleSecretKey+0002",
    "spark.hadoop.fs.s3a.session.token": "ExampleSessionToken0003",
    "spark.hadoop.fs.azure.account.key.acct.blob.core.windows.net": "ExampleAzureKey0004==",
}
ENV_SECRET = "ExampleEnvSecret0005"


def test_secret_keys_are_recognised() -> None:
    assert all(is_secret_key(k) for k in [*SECRETS, "spark.ssl.keyPassword", "spark.authenticate.secret"])
    assert not any(is_secret_key(k) for k in ("spark.sql.shuffle.partitions", "spark.executor.memory", "run_dir",
                                              "spark.io.encryption.keySizeBits", "join_on"))


def test_secrets_in_spark_conf_and_env_are_never_written(spark, tmp_path: Path, monkeypatch, capsys, caplog) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ENV_SECRET)
    caplog.set_level("INFO")
    pool = Pool(tmp_path / "shards")
    shard = pool.shard("00000")
    for i in range(3):
        shard.good(f"k{i}")
    shard.write()
    run_dir = tmp_path / "run"
    conf = {**SECRETS, "spark.sql.shuffle.partitions": "8"}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"input": str(pool.shards), "run_dir": str(run_dir),
                                      "basic_filter": {"min_side": 16}, "spark": {"conf": conf}}))
    assert main(["run", str(config)]) == 0
    assert main(["status", str(run_dir)]) == 0
    assert main(["verify", str(run_dir)]) == 0
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())["spark"]["conf"]
    assert saved == {**{k: REDACTED for k in SECRETS}, "spark.sql.shuffle.partitions": "8"}
    written = [p for p in run_dir.rglob("*") if p.is_file()]
    assert len(written) > 10
    out = capsys.readouterr()
    for secret in [*SECRETS.values(), ENV_SECRET]:
        assert not [p for p in written if secret.encode() in p.read_bytes()], secret
        assert secret not in out.out + out.err + caplog.text


def test_run_dir_and_input_that_overlap_are_refused(tmp_path: Path) -> None:
    (tmp_path / "shards").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "shards")
    overlapping = [  # (input, run_dir): the run dir holds the input, or lies inside what it can match
        (tmp_path / "export" / "*.tar", tmp_path), (tmp_path / "shards", tmp_path), (tmp_path, tmp_path),
        (f"{tmp_path}/**/*.tar", tmp_path / "shards" / "run"), (f"{tmp_path}/*/*/*.tar", tmp_path / "run"),
        (f"{tmp_path}/sh*/**", tmp_path / "shards" / "r"), (f"{tmp_path}/{{a,link}}/*/*.tar", tmp_path / "shards" / "r"),
        (tmp_path / "link" / "x.tar", tmp_path / "shards"),
    ]
    for spec, run_dir in overlapping:
        with pytest.raises(ConfigError, match="config key 'run_dir': .* overlap"):
            config_from_dict({"input": str(spec), "run_dir": str(run_dir)})
    config_from_dict({"input": str(tmp_path / "shards"), "run_dir": str(tmp_path / "shards-run")})
    config_from_dict({"input": f"{tmp_path}/shards/*.tar", "run_dir": str(tmp_path / "run")})
    config_from_dict({"input": str(tmp_path / "shards"), "run_dir": str(tmp_path / "shards" / "run")})  # *.tar only


# Reading untrusted bytes must never run code: these calls may not appear in the product.
FORBIDDEN = {
    r"\bpickle\.loads?\(|\bimport pickle\b|\bcloudpickle\.loads?\(": "unpickling",
    r"(?<![.\w])eval\(|(?<![.\w])exec\(": "eval/exec",
    r"\byaml\.(load|unsafe_load|full_load)\(": "yaml.load (use safe_load)",
    r"allow_pickle\s*=\s*True": "np.load(allow_pickle=True)",
    r"\bextractall\(|\.extract\(": "tar extraction to disk",
    r"shell\s*=\s*True|\bos\.system\(": "shell commands",
}


def test_product_code_has_no_unsafe_loads() -> None:
    sources = [p for d in ("pipeline", "schemas", "jobs", "bench") for p in (ROOT / d).rglob("*.py")]
    assert len(sources) > 20
    found = []
    for path in sources:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            found += [f"{path.relative_to(ROOT)}:{n}: {what}" for rx, what in FORBIDDEN.items() if re.search(rx, line)]
            if "torch.load(" in line and "weights_only=True" not in line:
                found.append(f"{path.relative_to(ROOT)}:{n}: torch.load without weights_only=True")
    assert found == []
