"""Checkpoint files: safe loading, atomic saving, and what an unreadable file holds, for error messages.

Every checkpoint is read by ``load_checkpoint``, with ``torch.load(..., weights_only=True)``: a file
can hold tensors and plain Python containers only, so loading it never runs code hidden in it. A file
that only an unsafe load could read is refused with ``UnsafeCheckpointError``, whose message names the
command that converts it (``usdrl.training.checkpoint.convert_checkpoint``). Weights for use outside the
pipeline are safetensors files (``save_tensors_atomically``, ``load_tensors``).
"""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from usdrl.data.atomic_files import atomic_file


class CheckpointError(ValueError):
    """A checkpoint that does not fit; the message names the file and what to do."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint that only ``weights_only=False`` could load (it may run code); convert it if trusted."""


LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."  # torch.save's older (non-zip) format


def is_torch_file(path: Path) -> bool:
    """Whether a file is a torch.save file: a zip archive holding data.pkl, or the legacy format's magic number."""
    with open(path, "rb") as handle:
        if handle.read(len(LEGACY_TORCH_MAGIC)) == LEGACY_TORCH_MAGIC:
            return True
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.rsplit("/", 1)[-1] == "data.pkl" for name in archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


def describe_file(path: Path) -> str:
    """What an unreadable file holds, in a few words, for error messages."""
    size = path.stat().st_size
    if size == 0:
        return "an empty file (0 bytes)"
    with open(path, "rb") as handle:
        head = handle.read(64)
    if head.startswith(b"PK\x03\x04"):
        if is_torch_file(path):
            return f"a damaged PyTorch archive ({size} bytes)"
        try:
            with zipfile.ZipFile(path) as archive:
                names = ", ".join(archive.namelist()[:4])
            return f"a zip archive ({names}; a NumPy .npz?), not a PyTorch checkpoint"
        except (zipfile.BadZipFile, OSError, ValueError):
            return f"a truncated or damaged PyTorch archive ({size} bytes)"
    if head.startswith(LEGACY_TORCH_MAGIC):
        return f"a damaged PyTorch checkpoint in the legacy format ({size} bytes)"
    kinds = {b"\x93NUMPY": "a NumPy .npy file", b"\x1f\x8b": "gzip-compressed data", b"\x7fELF": "an ELF executable",
             b"\x80": "a Python pickle"}
    for magic, kind in kinds.items():
        if head.startswith(magic):
            return f"{kind} ({size} bytes), not a PyTorch checkpoint"
    if all(32 <= byte < 127 or byte in b"\t\r\n" for byte in head):
        first_line = head.decode("ascii").strip().splitlines()[0][:40] if head.strip() else ""
        return f"text ({size} bytes, starting {first_line!r}), not a PyTorch checkpoint"
    return f"binary data of no known kind ({size} bytes), not a PyTorch checkpoint"


def convert_hint(path: Path) -> str:
    """The ``usdrl convert-checkpoint`` command that rewrites ``path`` in the safe form, for error messages."""
    return (f"usdrl convert-checkpoint {path} --out {path.with_name(path.stem + '.safe' + path.suffix)} "
            f"--trust-this-file")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """The content of a checkpoint file, loaded with ``weights_only=True``: no code in the file runs.

    Raises CheckpointError naming the file and what it holds (missing, a directory, empty, text,
    truncated), or UnsafeCheckpointError for a file that needs an unsafe load, with the command
    that converts it.
    """
    path = Path(path)
    if path.is_dir():
        inside = next((p for p in (path / "checkpoints" / "last.pt", path / "last.pt") if p.is_file()), None)
        hint = f"; did you mean {inside}?" if inside else "; pass a checkpoint file (e.g. RUN/checkpoints/last.pt)"
        raise CheckpointError(f"{path} is a directory, not a checkpoint file{hint}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is an empty file (0 bytes), not a checkpoint (an interrupted copy or write?)")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols 4/5 before failing; the error says it all
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if not is_torch_file(path):  # a .npy, text, a plain pickle ...: converting would not help
            raise CheckpointError(f"{path} is not a readable checkpoint: it is {describe_file(path)}") from None
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Detected pickle protocol")
                unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # noqa: BLE001 - the legacy format has no such listing
            unsafe = []
        if unsafe or "weights only load failed" in str(error).lower():
            named = f" ({', '.join(unsafe[:4])})" if unsafe else ""
            raise UnsafeCheckpointError(
                f"{path} holds Python objects{named} that only an unsafe load (weights_only=False) could rebuild, "
                f"and such a load runs any code hidden in the file, so it is refused; if it is an older usdrl "
                f"checkpoint or you trust its source, convert it once: {convert_hint(path)}") from None
        raise CheckpointError(f"{path} is not a readable checkpoint: it is {describe_file(path)}") from None
    except Exception:  # noqa: BLE001 - torch reports damage as KeyError, EOFError, OSError, RuntimeError ...
        raise CheckpointError(f"{path} is not a readable checkpoint: it is {describe_file(path)}") from None


def describe_content(content: Any) -> str:
    """What a loaded checkpoint holds, in a few words, for error messages."""
    if isinstance(content, dict):
        if content and all(isinstance(v, torch.Tensor) for v in content.values()):
            return f"a bare state dict of {len(content)} tensors"
        keys = ", ".join(map(str, list(content)[:6])) + (", ..." if len(content) > 6 else "")
        return f"a dict with keys {keys}"
    return f"a {type(content).__name__}"


def save_atomically(content: dict[str, Any], path: str | Path) -> Path:
    """torch.save to a temporary name, then rename: a crash never leaves a half-written checkpoint."""
    with atomic_file(path) as temporary:
        torch.save(content, temporary)
    return Path(path)


def save_tensors_atomically(tensors: dict[str, torch.Tensor], path: str | Path,
                            metadata: dict[str, str] | None = None) -> Path:
    """Tensors as a safetensors file (no pickle: loading it runs no code), written to a temporary name, then
    renamed. ``metadata``: text only (safetensors' header)."""
    from safetensors.torch import save_file

    with atomic_file(path) as temporary:
        save_file({name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}, str(temporary),
                  metadata=metadata)
        mask = os.umask(0)  # read the umask (safetensors creates its files 0600): the mode of every other file
        os.umask(mask)
        os.chmod(temporary, 0o666 & ~mask)
    return Path(path)


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, text metadata) of a safetensors file, on the CPU; a CheckpointError naming the file when it is
    missing or not a safetensors file."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; it should hold safetensors weights")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            return {name: handle.get_tensor(name) for name in handle.keys()}, dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors file ({' '.join(str(error).split())})") from None
