"""The one place that decides which implementation of an op runs.

``FASTDEBLUR_BACKEND`` (or :func:`set_backend`) is ``auto`` (default), ``native``,
``triton`` or ``reference``.

``auto``: CUDA tensors use the native CUDA kernel when it was built, else Triton when it
is installed, else the PyTorch reference; CPU tensors use the native CPU kernel when
built, else the reference (logged once). An explicitly requested backend that cannot
run the tensor raises instead of silently falling back.

:func:`select` is plain Python over values fixed at import (which native kernels the
extension registered, whether Triton is installed), so ``torch.compile(fullgraph=True)``
traces it: the choice is made once, at trace time, and is part of the compiled graph
(switching the backend later does not recompile an already compiled function).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from collections.abc import Iterator
from typing import Literal

import torch

from fastdeblur import _ext

Backend = Literal["native", "triton", "reference"]
_CHOICES = ("auto", "native", "triton", "reference")
log = logging.getLogger("fastdeblur")
_override: str | None = None
_logged: set[str] = set()


class BackendUnavailableError(RuntimeError):
    """An explicitly requested backend cannot run on the given tensors."""


def requested() -> str:
    """The backend asked for: :func:`set_backend` first, then ``FASTDEBLUR_BACKEND``."""
    value = _override or os.environ.get("FASTDEBLUR_BACKEND", "auto")
    value = value.strip().lower()
    if value not in _CHOICES:
        raise ValueError(f"FASTDEBLUR_BACKEND must be one of {_CHOICES}, got {value!r}")
    return value


def set_backend(name: str | None) -> None:
    """Force a backend for this process (``None`` restores the environment's choice)."""
    global _override
    if name is not None and name not in _CHOICES:
        raise ValueError(f"backend must be one of {_CHOICES}, got {name!r}")
    _override = name


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Context manager form of :func:`set_backend`."""
    global _override
    previous = _override
    set_backend(name)
    try:
        yield
    finally:
        _override = previous


def _native_kernel_table() -> frozenset[tuple[str, str]]:
    """``(op, "CPU" | "CUDA")`` of every kernel that ``fastdeblur._C`` registers."""
    if not _ext.has_native():
        return frozenset()
    names = [name.split("::", 1)[1] for name in torch._C._dispatch_get_all_op_names()
             if name.startswith("fastdeblur::")]
    return frozenset((name, key) for name in names for key in ("CPU", "CUDA")
                     if _ext.has_kernel(name, key))


# Asked once, at import (the extension registers all its kernels when it loads): a set
# lookup is traceable by torch.compile, the dispatcher query behind it is not.
_NATIVE_KERNELS = _native_kernel_table()


def _triton_importable() -> bool:
    if importlib.util.find_spec("triton") is None:
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


_HAS_TRITON = _triton_importable()


def has_triton() -> bool:
    """Triton is installed (whether it can run a tensor: :func:`triton_can_run`)."""
    return _HAS_TRITON


def has_native_kernel(op: str, device: torch.device) -> bool:
    """Whether ``fastdeblur._C`` has a kernel of ``op`` for tensors on ``device``."""
    key = "CUDA" if device.type == "cuda" else "CPU"
    return device.type in ("cpu", "cuda") and (op, key) in _NATIVE_KERNELS


def triton_can_run(device: torch.device) -> bool:
    """Triton runs CUDA tensors on a GPU, and CPU tensors only under its interpreter."""
    if not has_triton():
        return False
    if device.type == "cuda":
        return True
    return os.environ.get("TRITON_INTERPRET") == "1"


def _log_once(key: str, message: str) -> None:
    if torch.compiler.is_compiling():
        return  # logging is not traceable; the eager call (or the next one) logs it
    if key not in _logged:
        _logged.add(key)
        log.warning(message)


def select(op: str, device: torch.device, *, has_triton_impl: bool = True) -> Backend:
    """Pick the implementation of ``op`` for tensors on ``device``.

    Args:
        op: Name of the op as registered in ``torch.ops.fastdeblur``.
        device: Device of the op's tensors.
        has_triton_impl: Whether a Triton version of ``op`` exists.

    Returns:
        ``"native"``, ``"triton"`` or ``"reference"``.

    Raises:
        BackendUnavailableError: An explicitly requested backend cannot run here.
    """
    want = requested()
    key = "CUDA" if device.type == "cuda" else "CPU"
    native_ok = has_native_kernel(op, device)
    triton_ok = has_triton_impl and triton_can_run(device)
    if want == "reference":
        return "reference"
    if want == "native":
        if not native_ok:
            raise BackendUnavailableError(
                f"backend 'native' requested but fastdeblur._C has no {key} kernel for {op}"
                + (f" ({_ext.import_error()})" if _ext.import_error() else "")
            )
        return "native"
    if want == "triton":
        if not triton_ok:
            raise BackendUnavailableError(
                f"backend 'triton' requested but Triton cannot run {op} on {device.type} tensors"
                " (needs a GPU, or TRITON_INTERPRET=1 for CPU tensors)"
            )
        return "triton"
    if native_ok:
        return "native"
    if device.type == "cuda" and triton_ok:
        return "triton"
    _log_once(
        f"{op}:{key}",
        f"fastdeblur: no native {key} kernel for {op}; using the PyTorch reference (slower)",
    )
    return "reference"
