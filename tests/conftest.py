from pathlib import Path

import pytest
import torch
from timm.models.deit import VisionTransformerDistilled
from timm.models.vision_transformer import VisionTransformer

# Tiny ViT variants covering the token layouts of timm's zoo.
VARIANTS = {
    "class_token": dict(),
    "reg_tokens": dict(reg_tokens=2),
    "no_embed_class": dict(no_embed_class=True, reg_tokens=1),
    "mean_pool": dict(class_token=False, global_pool="avg", fc_norm=True),
    "distilled": dict(distilled=True),  # DeiT: class and distillation tokens, the head reads their mean
}


def tiny_vit(**overrides) -> VisionTransformer:
    """(B, 3, 32, 32) images, 8-px patches (4 x 4 grid), width 32, 2 heads, 3 blocks, no classifier."""
    args = dict(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2, num_classes=0)
    kind = VisionTransformerDistilled if overrides.pop("distilled", False) else VisionTransformer
    return kind(**{**args, **overrides})


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def one_thread():
    """One CPU thread for the test: bitwise-reproducible sums, the same arithmetic as single-thread subprocesses, and
    no oversubscription of a shared 2-core machine. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fresh_device_cache(one_thread):
    """One thread, and no device-resident decoded images carried over to the next test."""
    from e2vpt_viz.experiments.device_data import clear_cache

    yield
    clear_cache()


TINY_DATA = dict(num_classes=4, train_per_class=6, val_per_class=2, test_per_class=3)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """A synthetic target-task root (4 classes; 6 / 2 / 3 images per class in train / val / test), made once."""
    from data_prep.synthetic import generate_synthetic

    return generate_synthetic(tmp_path_factory.mktemp("data") / "tiny", task="target", seed=1, **TINY_DATA)


@pytest.fixture(scope="session")
def trainval_root(tiny_root, tmp_path_factory) -> Path:
    """The tiny root with a trainval.json (train + val), as a VTAB-1k task folder of `python -m data_prep vtab` has;
    named like the offline task's folder. Read it; do not write into it."""
    import json
    import shutil

    root = tmp_path_factory.mktemp("trainval") / "starter_distance"
    shutil.copytree(tiny_root, root)
    both = {**json.loads((root / "train.json").read_text()), **json.loads((root / "val.json").read_text())}
    (root / "trainval.json").write_text(json.dumps(both))
    return root


@pytest.fixture(scope="session")
def vtab_offline_root(tmp_path_factory) -> tuple[Path, float]:
    """A root prepared by ``python -m data_prep vtab --root R --tasks starter_distance`` (the offline VTAB-shaped
    task, no source), once per session, and the seconds the command took. Read it; do not write into it."""
    import time

    from data_prep.__main__ import main as data_prep_main

    root = tmp_path_factory.mktemp("vtab-offline") / "vtab-1k"
    started = time.perf_counter()
    assert data_prep_main(["vtab", "--root", str(root), "--tasks", "starter_distance"]) == 0
    return root, time.perf_counter() - started


@pytest.fixture(scope="session")
def lesson_workspace(tmp_path_factory):
    """A copy of the lessons beside a link to the repository's ``data/`` (see tests/notebook_kernel.py)."""
    from notebook_kernel import make_workspace

    return make_workspace(tmp_path_factory.mktemp("lessons"))


@pytest.fixture(scope="session")
def lesson(request, lesson_workspace):
    """A lesson executed once per test session with smoke parameters, in a kernel kept alive for the tests that read
    its namespace. Parametrise indirectly with the notebook's file name; pytest groups the tests of one lesson, so
    one kernel runs at a time."""
    from notebook_kernel import LessonKernel

    with LessonKernel(lesson_workspace, request.param) as kernel:
        kernel.run_all()
        yield kernel
