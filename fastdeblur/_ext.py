"""Loads the native extension ``fastdeblur._C`` when it was built.

Importing ``_C`` registers the native kernels under ``torch.ops.fastdeblur``. When the
extension is missing (a pure-Python install, or a failed build) every op falls back to
its PyTorch reference; ``_backend`` logs that once.
"""

from __future__ import annotations

import functools
import logging

import torch

log = logging.getLogger("fastdeblur")

try:
    from fastdeblur import _C  # noqa: F401

    _IMPORT_ERROR: str | None = None
except ImportError as exc:  # the extension is optional
    _IMPORT_ERROR = str(exc)


def has_native() -> bool:
    """True when ``fastdeblur._C`` was built and loaded (CPU kernels at least)."""
    return _IMPORT_ERROR is None


@functools.cache
def has_native_cuda() -> bool:
    """True when the extension was built with its CUDA kernels."""
    return has_native() and torch.ops.fastdeblur.build_info() == "cpu+cuda"


def import_error() -> str | None:
    """Why ``fastdeblur._C`` could not be imported, or None when it was."""
    return _IMPORT_ERROR


def has_kernel(op: str, dispatch_key: str) -> bool:
    """Whether ``torch.ops.fastdeblur.<op>`` has a kernel for ``dispatch_key`` ("CPU", "CUDA")."""
    if not has_native():
        return False
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(f"fastdeblur::{op}", dispatch_key)
    except RuntimeError:  # op not registered at all
        return False


def flush_subnormals(on: bool = True) -> None:
    """Flush subnormal floats to zero on this thread and on every intra-op worker thread.

    ``torch.set_flush_denormal`` sets the flag on the calling thread only, and the intra-op
    pool's workers copy it only when they are created: in a process that already ran a parallel
    op, the workers keep computing with subnormals (several times slower on x86). The native
    extension sets the flag on each existing worker; without it, only this thread and workers
    created later are covered.

    Args:
        on: Flush (True) or keep (False) subnormal floats.
    """
    torch.set_flush_denormal(on)
    if has_native() and hasattr(torch.ops.fastdeblur, "set_flush_denormal_all_threads"):
        torch.ops.fastdeblur.set_flush_denormal_all_threads(on)
