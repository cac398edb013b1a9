"""Which timm model names take prompts: ``python -m e2vpt_viz backbones``.

Every model of timm's ViT modules is probed once per timm version: built on the meta device (no memory, no weights),
wrapped with E²VPT (3 visual and 2 key-value prompts) and run forward on an empty batch at its default input size.
A name is *supported* when that forward gives the logits' shape; otherwise the listing keeps the one-line refusal
(NaFlex, post-norm or parallel blocks, windowed attention...). The listing is shipped as ``docs/results/backbones.json``
with the timm version it was made with; for another timm version the command probes again (a few minutes) and keeps
that listing in ``~/.cache/e2vpt-viz`` (``$XDG_CACHE_HOME``), never over the shipped file.

``--write FILE`` also re-checks :data:`EXAMPLES` for real: each built with random weights at its default input size,
wrapped, run forward, and compared with the backbone with the prompts off.
"""
from __future__ import annotations

import copy
import fnmatch
import json
import os
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Optional, Sequence, Union

import timm
import torch

from ..backbones import backbone_input_size
from ..checkpoint import atomic_write
from ..methods import E2VPTConfig, apply_prompts
from ..model import backbone_family
from .docs import measured_now

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "docs" / "results" / "backbones.json"
# timm's modules that define Vision Transformers; every model name in them is probed.
MODULES = ("vision_transformer", "vision_transformer_hybrid", "vision_transformer_relpos", "vision_transformer_sam",
           "deit", "eva", "beit", "naflexvit")
# One name per family a user asked about (issue table), re-checked with real random weights by ``--write``.
EXAMPLES = ("vit_small_patch16_224", "vit_base_patch14_reg4_dinov2", "vit_base_patch16_siglip_224",
            "vit_base_patch16_clip_224", "vit_medium_patch16_gap_256", "vit_base_patch16_224.mae", "flexivit_small",
            "vit_so150m_patch16_reg4_gap_256", "deit_small_distilled_patch16_224", "deit3_small_patch16_224",
            "eva02_tiny_patch14_224", "vit_small_patch16_rope_224", "vit_small_patch16_dinov3",
            "vit_pe_core_tiny_patch16_384", "beit_base_patch16_224", "vit_relpos_small_patch16_224",
            "naflexvit_base_patch16_gap", "samvit_base_patch16")
PROBE = E2VPTConfig(num_prompts=3, num_kv_prompts=2)
IN_PROCESS = 8  # up to this many names are probed in the calling process


def _why(err: Exception) -> str:
    """The first sentence of a refusal (the rest names models that work, which the listing already is)."""
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text.split(". ")[0].rstrip(".") + "."


def probe(name: str) -> dict:
    """``{"class", "family", "supported", "why"}`` for one timm name, built and run on the meta device."""
    entry: dict = {"class": None, "family": None, "supported": False, "why": None}
    try:
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")
            model = timm.create_model(name, pretrained=False, num_classes=0)
            entry.update({"class": type(model).__name__, "family": backbone_family(model)})
            out = apply_prompts(model, PROBE, 5)(torch.empty(1, *backbone_input_size(name)))
        if tuple(out.shape) != (1, 5):
            raise RuntimeError(f"the forward gave shape {tuple(out.shape)}, not (1, 5)")
        entry["supported"] = True
    except Exception as err:  # the listing records every kind of refusal or failure as it is
        entry["why"] = _why(err)
    return entry


def check(name: str) -> dict:
    """One name re-checked for real: random weights at the default input size, E²VPT forward, prompts off vs the
    backbone. ``{"class", "input_size", "result": "works" | "refused", "message", "prompts_off_max_abs_diff"}``."""
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    backbone = timm.create_model(name, pretrained=False, num_classes=0).eval()
    row = {"name": name, "class": type(backbone).__name__, "input_size": list(backbone_input_size(name))}
    images = torch.randn(1, *backbone_input_size(name))
    try:
        model = apply_prompts(copy.deepcopy(backbone), PROBE, 5).eval()
    except Exception as err:
        return {**row, "result": "refused", "message": str(err).splitlines()[0]}
    with torch.no_grad():
        logits = model(images)
        with model.disable_prompts():
            diff = (model.forward_features(images) - backbone.forward_features(images)).abs().max().item()
    return {**row, "result": "works", "message": f"logits {tuple(logits.shape)}", "prompts_off_max_abs_diff": diff}


def scan(names: Optional[Sequence[str]] = None, workers: int = 2, progress: bool = True) -> dict[str, dict]:
    """:func:`probe` for ``names`` (default: every model of :data:`MODULES`), ``workers`` processes at a time."""
    names = sorted(names if names is not None else all_names())
    started, entries = time.perf_counter(), {}
    if len(names) <= IN_PROCESS or workers <= 1:  # a few names: starting processes would cost more than probing
        return {name: probe(name) for name in names}
    with ProcessPoolExecutor(min(workers, len(names)), mp_context=get_context("spawn")) as pool:
        for i, (name, entry) in enumerate(zip(names, pool.map(probe, names, chunksize=4)), 1):
            entries[name] = entry
            if progress and (i % 25 == 0 or i == len(names)):
                print(f"probed {i}/{len(names)} timm models ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    return entries


def user_cache_dir() -> Path:
    """The user's e2vpt-viz cache: ``$XDG_CACHE_HOME/e2vpt-viz`` (else ``~/.cache/e2vpt-viz``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "e2vpt-viz"


def _cache_path() -> Path:
    return user_cache_dir() / f"backbones-timm-{timm.__version__}.json"


def all_names() -> list[str]:
    """Every model name of :data:`MODULES` in the installed timm."""
    return sorted({n for m in MODULES for n in timm.list_models(module=m)})


def _read_listing(path: Path) -> dict[str, dict]:
    """The ``models`` of a listing made with the installed timm version ({} for another version or no file)."""
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    ok = isinstance(found, dict) and found.get("timm") == timm.__version__ and isinstance(found.get("models"), dict)
    return found["models"] if ok else {}


def listing(patterns: Union[str, Sequence[str]] = "*", refresh: bool = False, progress: bool = True) -> dict[str, dict]:
    """``{name: probe entry}`` for the timm names matching any glob in ``patterns``, for the installed timm version.

    Entries come from the shipped listing when it was made with this timm version, else from the user's cache; names
    in neither (or all, with ``refresh``) are probed now and added to the cache
    (``~/.cache/e2vpt-viz/backbones-timm-<version>.json``), never to the shipped file.
    """
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    names = [n for n in all_names() if any(fnmatch.fnmatch(n, p) for p in patterns)]
    cache = _cache_path()
    cached = _read_listing(cache)
    known = {} if refresh else {**_read_listing(SHIPPED), **cached}
    missing = [n for n in names if n not in known]
    if missing:
        if progress:
            print(f"probing {len(missing)} of timm {timm.__version__}'s ViT models on the meta device (about "
                  f"{max(1, len(missing) // 60)} min, once per timm version)...", file=sys.stderr)
        probed = scan(missing, progress=progress)
        known.update(probed)
        cache.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"timm": timm.__version__, "models": dict(sorted({**cached, **probed}.items()))}, indent=1)
        atomic_write(cache, lambda tmp: Path(tmp).write_text(text + "\n"))
    return {n: known[n] for n in names}


def supported_backbones(patterns: Union[str, Sequence[str]] = "*", refresh: bool = False) -> list[str]:
    """The timm names (matching any of the glob ``patterns``) that take prompts with the installed timm."""
    return [n for n, e in listing(patterns, refresh).items() if e["supported"]]


def write_record(path: Union[str, Path], workers: int = 2) -> dict:
    """The shipped result file: the full probe plus :data:`EXAMPLES` re-checked for real."""
    started = time.perf_counter()
    models = scan(workers=workers)
    examples = [check(name) for name in EXAMPLES]
    record = {
        "claim": "Which timm ViT model names take prompts (E²VPT forward on the meta device), and the families' "
                 "examples re-checked with random weights: prompts off give the backbone's features.",
        "kind": "backbones",
        "command": f"python -m e2vpt_viz backbones --write {path}",
        "measured": measured_now(ROOT),
        "device": f"{os.cpu_count()} CPU cores, no GPU (meta device for the probe)",
        "torch": torch.__version__, "timm": timm.__version__, "seconds": round(time.perf_counter() - started),
        "modules": list(MODULES), "examples": examples, "models": models,
    }
    atomic_write(Path(path), lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1) + "\n"))
    return record


def print_listing(patterns: Sequence[str], show_refused: bool, refresh: bool) -> None:
    chosen = listing(patterns, refresh)
    if not chosen:
        print(f"no model of timm {timm.__version__}'s ViT modules matches {' '.join(patterns)}; try a glob such as "
              f"'vit_base*' '*dinov2*' 'eva02*'", file=sys.stderr)
        return
    for name, entry in chosen.items():
        if entry["supported"]:
            print(f"{name}  ({entry['class']})")
        elif show_refused:
            print(f"{name}  refused: {entry['why']}")
    works = sum(e["supported"] for e in chosen.values())
    print(f"{works} of {len(chosen)} timm {timm.__version__} names take prompts"
          + ("" if show_refused else "; --all lists the others with the reason"), file=sys.stderr)
