"""Prompt-only checkpoints (safetensors, kilobytes per task), atomic file writes and safe checkpoint reads.

A prompt checkpoint stores what a method trained (prompts, masks, head, and trained backbone weights for the
baselines) plus, as metadata, the method config, the backbone's shape signature and a CRC-32 of the tensors, so
loading into a model of another backbone or config, or loading a damaged file, fails with a clear message instead
of silently mis-loading. Writes go through :func:`atomic_write` (the old file or the new one, never half of one;
a full disk raises :class:`CheckpointWriteError` and leaves the old file as it was). Reads never unpickle code:
training states go through :func:`load_torch_state` (zip CRCs checked, ``weights_only``), prompt files through
:func:`read_safetensors`.
"""
from __future__ import annotations

import errno
import glob
import json
import os
import pickle
import shutil
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Callable, Optional, Union

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .model import PromptedViT

CRC_KEY = "crc32"  # safetensors metadata entry: CRC-32 of the tensors (see tensors_crc32)


class CheckpointMismatchError(ValueError):
    """A checkpoint made for another backbone, method config or task."""


class CheckpointReadError(ValueError):
    """A checkpoint file that is truncated, corrupted or holds pickled Python objects; nothing in it was used or run."""


class CheckpointWriteError(OSError):
    """Writing a file failed (disk full, file-size limit, permissions); the file it would replace is unchanged."""


# What a writer raises when the disk is full or a file-size limit is hit: OSError from Python's own file objects,
# RuntimeError from torch.save's zip writer ("unexpected pos ..."), SafetensorError from safetensors.
_WRITE_ERRORS = (OSError, RuntimeError, SafetensorError)


def _write_error(path: Path, error: BaseException) -> CheckpointWriteError:
    folder = next((p for p in (path.parent, *path.parents) if p.exists()), Path("."))
    try:
        free = f"{shutil.disk_usage(folder).free / 1e9:.2f} GB are free there"
    except OSError:
        free = "free space unknown"
    kept = "the previous version is intact" if path.exists() else "nothing was written"
    detail = (str(error).strip().splitlines() or [""])[0][:200]
    if path.is_dir() or getattr(error, "errno", None) in (errno.EISDIR, errno.ENOTDIR):
        failure = CheckpointWriteError(f"Could not write {path}: " + (
            "it is a folder; give a file path" if path.is_dir() else
            f"a part of {path.parent} is a file, not a folder; choose another output path") + ".")
        failure.errno = getattr(error, "errno", None)
        return failure
    if getattr(error, "errno", None) in (errno.EACCES, errno.EPERM, errno.EROFS):
        todo = f"Make {path.parent} writable (or choose another output folder)"
    else:
        todo = "Free some disk space (or raise the file-size limit)"
    failure = CheckpointWriteError(
        f"Could not write {path} ({type(error).__name__}: {detail}; {free}). {path.name} was not changed "
        f"({kept}). {todo} and run the same command again: it continues from what was saved.")
    failure.errno = getattr(error, "errno", None)
    return failure


def atomic_write(path: Union[str, Path], write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``.

    Readers see either the old file or the complete new one, never a half-written file. If the write fails (disk
    full, file-size limit, no permission), the temporary file is removed, ``path`` is left as it was and
    :class:`CheckpointWriteError` says so. After a successful write, temporary files of ``path`` that a killed
    earlier write left behind are removed.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise _write_error(path, error) from error
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp (and safetensors' writer) make 0600 files; give the usual permissions
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except _WRITE_ERRORS as error:
        raise _write_error(path, error) from error
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    _remove_stale_temporaries(path)
    return path


def write_text(path: Union[str, Path], text: str) -> Path:
    """``text`` at ``path``, written atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_json(path: Union[str, Path], data, indent: Optional[int] = 1) -> Path:
    """``data`` as JSON at ``path``, written atomically (see :func:`atomic_write`)."""
    return write_text(path, json.dumps(data, indent=indent))


def _remove_stale_temporaries(path: Path) -> None:
    """Delete ``.<name>.*.tmp`` files beside ``path``: half-written files of writes that were killed (kill -9, power
    loss) before they could clean up. Only one writer writes a given path, so none of them is still in use."""
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        try:
            stale.unlink()
        except OSError:
            pass  # already gone, or not ours to delete: leaving it is harmless


def load_torch_state(path: Union[str, Path], what: str = "Checkpoint", fix: str = "", require_zip: bool = True):
    """A ``torch.save`` file read without running pickled code.

    The zip container's CRC-32s are checked first (``torch.load`` itself does not check them, so a flipped bit in a
    tensor would load silently); then ``torch.load(weights_only=True)`` reads plain tensors and containers only.
    A truncated, corrupted or pickle-bearing file raises :class:`CheckpointReadError` (``what`` names the file's
    role, ``fix`` says what to do); nothing in it is executed. ``require_zip=False`` also reads files in torch's
    legacy (pre-1.6, not zip) format, without the CRC check.
    """
    path = Path(path)
    fix = f" {fix}" if fix else ""
    try:
        if not require_zip and not zipfile.is_zipfile(path):
            damaged = None
        else:
            with zipfile.ZipFile(path) as archive:
                damaged = archive.testzip()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, struct.error, NotImplementedError) as error:
        raise CheckpointReadError(f"{what} {path} is truncated or not a PyTorch checkpoint "
                                  f"({type(error).__name__}: {error}); it was not loaded.{fix}") from None
    if damaged is not None:
        part = damaged.split("/", 1)[-1]  # members are named <archive root>/data.pkl, <archive root>/data/0, ...
        raise CheckpointReadError(f"{what} {path} is corrupted: its part {part!r} fails its CRC-32 check; it was not "
                                  f"loaded.{fix}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = next((line.strip() for line in str(error).splitlines() if "unsupported" in line.lower()), "")
        raise CheckpointReadError(f"{what} {path} holds pickled Python objects besides tensors ({found or 'refused'})"
                                  f"; loading it could run code, so it was refused unread.{fix}") from None
    except (RuntimeError, EOFError, ValueError, KeyError) as error:
        detail = (str(error).strip().splitlines() or [""])[0][:200]
        raise CheckpointReadError(f"{what} {path} is truncated or corrupted ({type(error).__name__}: {detail}); it "
                                  f"was not loaded.{fix}") from None


def tensors_crc32(tensors: dict[str, torch.Tensor]) -> str:
    """CRC-32 over the names, dtypes, shapes and bytes of ``tensors`` (8 hex digits), stored in prompt files."""
    crc = 0
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous().reshape(-1)
        crc = zlib.crc32(f"{name}|{tensor.dtype}|{tuple(tensors[name].shape)}|".encode(), crc)
        crc = zlib.crc32(tensor.view(torch.uint8).numpy(), crc)
    return f"{crc:08x}"


def save_safetensors(tensors: dict[str, torch.Tensor], path: Union[str, Path], metadata: dict[str, str]) -> Path:
    """Write ``tensors`` atomically with string ``metadata`` plus their CRC-32 (checked by :func:`read_safetensors`)."""
    meta = {**metadata, CRC_KEY: json.dumps(tensors_crc32(tensors))}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def _json_or_none(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return None


def read_safetensors(path: Union[str, Path], what: str = "Checkpoint", fix: str = "",
                     tensors: bool = True) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(raw string metadata, tensors) of a safetensors file, with clear errors.

    A file that is not valid safetensors (truncated, damaged header, a pickle in disguise) or whose tensors do not
    match the CRC-32 stored at saving raises :class:`CheckpointReadError`. Files written before the CRC was stored
    are read without that check. ``tensors=False`` reads only the header (no CRC check).
    """
    path = Path(path)
    fix = f" {fix}" if fix else ""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            saved = {key: f.get_tensor(key) for key in f.keys()} if tensors else {}
    except SafetensorError as error:
        raise CheckpointReadError(
            f"{what} {path} is not a readable safetensors file ({error}): it is truncated, corrupted or in another "
            "format (a pickled .pt/.pth file is never unpickled here, since that could run code); it was not "
            f"loaded.{fix}") from None
    stored = metadata.pop(CRC_KEY, None)
    if tensors and stored is not None and _json_or_none(stored) != tensors_crc32(saved):
        raise CheckpointReadError(f"{what} {path} is corrupted: its tensors do not match the CRC-32 stored when it was "
                                  f"saved; it was not loaded.{fix}")
    return metadata, saved


def backbone_signature(model: PromptedViT) -> dict:
    """Shape facts that a checkpoint must agree with: width, depth, heads, patch and image size, prefix tokens."""
    bb = model.backbone
    return {"embed_dim": bb.embed_dim, "depth": len(bb.blocks), "num_heads": bb.blocks[0].attn.num_heads,
            "patch_size": list(bb.patch_embed.patch_size), "img_size": list(bb.patch_embed.img_size),
            "num_prefix_tokens": bb.num_prefix_tokens}


def model_signature(model: PromptedViT) -> dict:
    """Everything that fixes the shapes of a model's trained tensors."""
    return {"backbone": backbone_signature(model), "method": model.method_config.to_dict(),
            "num_classes": model.num_classes}


def trained_state(model: PromptedViT) -> dict[str, torch.Tensor]:
    """The tensors a method trains (requires_grad) plus the masks, detached and contiguous on CPU."""
    state = {}
    for name, param in model.named_parameters():
        if param.requires_grad or name in ("token_mask", "segment_mask"):
            state[name] = param.detach().cpu().contiguous()
    return state


def restore_trained_state(model: PromptedViT, state: dict[str, torch.Tensor], source: str) -> PromptedViT:
    """Copy saved trained tensors (see :func:`trained_state`) into ``model``; every one it trains must be there."""
    missing = set(trained_state(model)) - set(state)
    if missing:
        raise CheckpointMismatchError(f"{source} lacks {sorted(missing)[:5]}.")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for key, value in state.items():
            params[key].copy_(value)
    return model


def _differences(found, expected, prefix: str = "") -> list[str]:
    """``key: checkpoint X vs model Y`` for every differing field, descending into nested dicts (dotted keys)."""
    if isinstance(found, dict) and isinstance(expected, dict):
        return [line for key in expected
                for line in _differences(found.get(key), expected[key], f"{prefix}{key}.")]
    if found != expected:
        return [f"{prefix[:-1]}: checkpoint {found!r} vs model {expected!r}"]
    return []


def _method_with_defaults(signature):
    """``signature`` as stored (tuples as lists) with every method config in it (a ``method`` entry holding a method
    config's ``to_dict()``, at any depth) read back and written again, so that a file saved before a method gained an
    option (stored without it) compares with that option's default; an unreadable one is left as it is."""
    from .methods import config_from_dict  # methods builds models; this module only reads their signatures

    signature = json.loads(json.dumps(signature))
    if not isinstance(signature, dict):
        return signature
    found = {key: _method_with_defaults(value) if isinstance(value, dict) else value for key, value in signature.items()}
    method = found.get("method")
    if isinstance(method, dict) and "method" in method:
        try:
            found["method"] = json.loads(json.dumps(config_from_dict(method).to_dict()))
        except (TypeError, ValueError, KeyError, AttributeError):
            pass
    return found


def check_signature(found: dict, expected: dict, source: str,
                    fix: str = "Build the model with the same backbone, method config and classes.") -> None:
    """Raise :class:`CheckpointMismatchError` naming each field that differs, with both sides' values, then ``fix``."""
    expected = json.loads(json.dumps(expected))  # as stored: tuples (e.g. LoRA's target modules) become lists
    found = _method_with_defaults(found) if isinstance(found, dict) else {}
    diffs = _differences(found, expected)
    if diffs:
        raise CheckpointMismatchError(f"{source} was made for another model; " + "; ".join(diffs) + f". {fix}")


def save_prompts(model: PromptedViT, path: Union[str, Path], **metadata) -> Path:
    """Write the trained tensors, the model signature and their CRC-32 to a safetensors file, atomically."""
    meta = {"signature": json.dumps(model_signature(model)),
            **{k: json.dumps(v) for k, v in metadata.items()}}
    return save_safetensors(trained_state(model), path, meta)


def read_prompt_metadata(path: Union[str, Path]) -> dict:
    """The JSON metadata of a prompt checkpoint (signature and whatever was passed to :func:`save_prompts`)."""
    meta, _ = read_safetensors(path, "Prompt checkpoint", tensors=False)
    return {k: json.loads(v) for k, v in meta.items()}


def load_prompts(model: PromptedViT, path: Union[str, Path]) -> PromptedViT:
    """Load a prompt checkpoint into a model built with the same backbone and method config.

    Raises :class:`CheckpointMismatchError` (naming both sides) for another backbone, method config or class count,
    and :class:`CheckpointReadError` for a truncated, corrupted or non-safetensors file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Prompt checkpoint {path} does not exist.")
    meta, state = read_safetensors(path, "Prompt checkpoint")
    check_signature(json.loads(meta.get("signature", "{}")), model_signature(model), f"Checkpoint {path}")
    return restore_trained_state(model, state, f"Checkpoint {path}")
