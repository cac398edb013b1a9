"""`python -m e2vpt_viz backbones`: the shipped listing of timm names that take prompts still says what the code does,
and the listing is re-made (never over the shipped file) for another timm version."""
import json
import subprocess
import sys

import pytest
import timm

from e2vpt_viz.experiments import backbone_support as support
from e2vpt_viz.experiments.docs import ROOT, backbones_text, load_results

RECORD = json.loads(support.SHIPPED.read_text())


def _sample() -> list[str]:
    """The first supported and the first refused name of every class in the record that today's timm still has."""
    chosen: dict[tuple, str] = {}
    for name, entry in RECORD["models"].items():
        if timm.is_model(name):
            chosen.setdefault((entry["class"], entry["supported"]), name)
    return sorted(chosen.values())


def test_the_record_covers_every_family_and_refuses_in_one_sentence():
    models = RECORD["models"]
    assert len(models) >= 250 and RECORD["modules"] == list(support.MODULES)
    classes = {e["class"] for e in models.values() if e["supported"]}
    assert {"VisionTransformer", "VisionTransformerDistilled", "Eva", "Beit", "VisionTransformerRelPos"} <= classes
    refused = {e["class"]: e["why"] for e in models.values() if not e["supported"]}
    assert "NaFlexVit" in refused and "VisionTransformerSAM" in refused
    assert all(why and why.count(". ") == 0 and why.endswith(".") for why in refused.values())  # one sentence
    examples = {e["name"]: e for e in RECORD["examples"]}
    assert set(examples) == set(support.EXAMPLES)
    for name, e in examples.items():  # the table: each row works exactly, or is refused
        assert (e["result"] == "works") == models[name.split(".")[0]]["supported"], name
        if e["result"] == "works":
            assert e["prompts_off_max_abs_diff"] == 0.0, name
    assert examples["naflexvit_base_patch16_gap"]["result"] == "refused"
    assert examples["deit_small_distilled_patch16_224"]["result"] == "works"


@pytest.mark.parametrize("name", _sample())
def test_recorded_entries_hold_today(name):
    """Re-probed now (meta device), each class's sample name gets the recorded verdict and reason."""
    now = support.probe(name)
    recorded = RECORD["models"][name]
    assert (now["supported"], now["class"], now["why"]) == (recorded["supported"], recorded["class"], recorded["why"])


@pytest.mark.parametrize("name", ["vit_small_patch16_224", "deit_small_distilled_patch16_224",
                                  "eva02_tiny_patch14_224", "naflexvit_base_patch16_gap"])
def test_examples_recheck_with_random_weights(name):
    recorded = next(e for e in RECORD["examples"] if e["name"] == name)
    now = support.check(name)
    assert {k: now[k] for k in ("class", "input_size", "result")} == {k: recorded[k] for k in
                                                                     ("class", "input_size", "result")}
    if now["result"] == "works":
        assert now["prompts_off_max_abs_diff"] == 0.0


def test_another_timm_version_is_probed_into_the_cache_not_over_the_shipped_file(tmp_path, monkeypatch):
    shipped = tmp_path / "backbones.json"
    shipped.write_text(json.dumps({"timm": "0.0.1", "models": {"x": {"supported": True}}}))
    monkeypatch.setattr(support, "SHIPPED", shipped)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    names = support.supported_backbones("beit_base*")  # only the names asked for are probed: a real probe, short
    assert json.loads(shipped.read_text())["timm"] == "0.0.1"  # the shipped file is untouched
    cached = json.loads((tmp_path / "cache" / "e2vpt-viz" / f"backbones-timm-{timm.__version__}.json").read_text())
    assert cached["timm"] == timm.__version__ and sorted(cached["models"]) == timm.list_models("beit_base*")
    assert names == [n for n, e in cached["models"].items() if e["supported"]] and "beit_base_patch16_224" in names
    assert support.listing("samvit_base_patch16")["samvit_base_patch16"]["supported"] is False  # a refused one...
    cached = json.loads((tmp_path / "cache" / "e2vpt-viz" / f"backbones-timm-{timm.__version__}.json").read_text())
    assert sorted(cached["models"]) == sorted([*names, "samvit_base_patch16"])  # ...added to the cache
    monkeypatch.setattr(support, "scan", lambda *a, **k: pytest.fail("a cached listing is not probed again"))
    assert support.supported_backbones("beit_base*") == names


def test_cli_lists_supported_names_and_the_refused_with_a_reason():
    out = subprocess.run([sys.executable, "-m", "e2vpt_viz", "backbones", "eva02_tiny*", "naflexvit_base*", "--all"],
                         capture_output=True, text=True, cwd=ROOT, check=True)
    assert RECORD["timm"] == timm.__version__ or "probing" in out.stderr
    lines = out.stdout.splitlines()
    assert "eva02_tiny_patch14_224  (Eva)" in lines
    assert any(line.startswith("naflexvit_base_patch16_gap  refused: Prompts do not support timm's NaFlexVit")
               for line in lines)
    assert "take prompts" in out.stderr


def test_docs_table_is_rendered_from_the_record():
    text = backbones_text(load_results())
    works = sum(e["supported"] for e in RECORD["models"].values())
    assert f"**{works} of {len(RECORD['models'])} names take prompts**" in text
    assert "| `naflexvit_base_patch16_gap` | `NaFlexVit` | 384 × 384 | refused |" in text
