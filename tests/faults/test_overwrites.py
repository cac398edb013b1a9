"""Case 11 (issue 18): nothing overwritten, mixed up or silently wrong. Shipped files are never written by a default,
a run folder belongs to one process, resumption continues only the same work, values are taken as written, unknown
keys are refused in every section, ``--overwrite`` replaces only what the tool made, evaluation never substitutes
images, and two models never share one backbone."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from e2vpt_viz.backbones import starter_weights_path
from e2vpt_viz.experiments.cli import main


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_pretrain_starter_never_writes_the_packaged_backbone_by_default(fault_root, tmp_path, monkeypatch, capsys,
                                                                      outcome):
    """11a · `pretrain-starter` without --out → writes under results/, the packaged backbone is untouched; --out on
    an existing file (the packaged one included) is refused in one line before any training"""
    packaged = starter_weights_path()
    before = sha256(packaged)
    monkeypatch.chdir(tmp_path)
    source = Path(shutil.copytree(fault_root, tmp_path / "source"))
    assert main(["pretrain-starter", "--data", str(source), "--epochs", "1"]) == 0
    written = tmp_path / "results" / "starter_backbone" / "starter-vit.safetensors"
    assert written.is_file() and sha256(packaged) == before
    assert f"backbone.checkpoint={written.relative_to(tmp_path)}" in capsys.readouterr().out

    for target in (packaged, written):
        stamp = target.stat().st_mtime_ns
        assert main(["pretrain-starter", "--data", str(tmp_path / "never-made"), "--out", str(target)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "--overwrite" in err and str(target) in err
        assert target.stat().st_mtime_ns == stamp and not (tmp_path / "never-made").exists()
        assert ("packaged starter backbone" in err) == (target == packaged)
    outcome(f"default wrote {written.relative_to(tmp_path)}; packaged sha256 unchanged; existing --out refused: {err}")


@pytest.mark.parametrize("epochs", ["0", "-3"])
def test_pretrain_starter_refuses_an_impossible_epoch_count_before_any_work(tmp_path, monkeypatch, capsys, epochs,
                                                                           outcome):
    """11a · `pretrain-starter --epochs 0` (read as "the default 30" before) or negative → one line, nothing made"""
    monkeypatch.chdir(tmp_path)
    assert main(["pretrain-starter", "--data", str(tmp_path / "src"), "--epochs", epochs]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"--epochs {epochs}" in err and "at least 1" in err
    assert list(tmp_path.iterdir()) == []
    outcome(err)
