"""Builds the native extension ``fastdeblur._C`` from ``csrc/`` and ``kernels/``.

The CPU kernels are always built. CUDA sources (``csrc/cuda/*.cu``) are added when the
installed torch is a CUDA build and ``nvcc`` is found, or when ``FASTDEBLUR_FORCE_CUDA=1``.
``FASTDEBLUR_NO_EXT=1`` skips the extension: the library then runs on its PyTorch
references.
"""

import glob
import os
import shutil
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _rel(paths: list[str]) -> list[str]:
    return sorted(os.path.relpath(p, ROOT) for p in paths)


def _want_cuda() -> bool:
    if os.environ.get("FASTDEBLUR_FORCE_CUDA") == "1":
        return True
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    nvcc = shutil.which("nvcc") or (
        CUDA_HOME and os.path.exists(os.path.join(CUDA_HOME, "bin", "nvcc"))
    )
    return bool(torch.version.cuda) and bool(nvcc)


def _extensions() -> tuple[list, dict]:
    if os.environ.get("FASTDEBLUR_NO_EXT") == "1":
        return [], {}
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    sources = _rel(
        glob.glob(os.path.join(ROOT, "csrc", "*.cpp"))
        + glob.glob(os.path.join(ROOT, "csrc", "ops", "*.cpp"))
        + glob.glob(os.path.join(ROOT, "csrc", "cpu", "*.cpp"))
    )
    include_dirs = [os.path.join(ROOT, "kernels"), os.path.join(ROOT, "csrc")]
    cxx_flags = ["-O3", "-std=c++17", "-fvisibility=hidden"]
    if sys.platform.startswith("linux"):
        # -fno-trapping-math (as torch itself is built) lets GCC if-convert float compares,
        # which the vectorised exp of the GRNN kernel needs.
        cxx_flags += ["-fopenmp", "-ffp-contract=fast", "-fno-trapping-math"]
        if os.environ.get("FASTDEBLUR_NATIVE_ARCH") == "1":
            cxx_flags.append("-march=native")
        else:
            # AVX2/FMA is on every x86-64 machine of the last decade; the kernels'
            # inner loops are written for the compiler to vectorise.
            import platform

            if platform.machine() in ("x86_64", "AMD64"):
                cxx_flags += ["-mavx2", "-mfma", "-mf16c"]
    extra = {"cxx": cxx_flags}
    ldflags = ["-fopenmp"] if sys.platform.startswith("linux") else []
    if _want_cuda():
        sources += _rel(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")))
        extra["nvcc"] = [
            "-O3",
            "-std=c++17",
            "--use_fast_math",
            "-lineinfo",
            "-DWITH_CUDA",
            "--expt-relaxed-constexpr",
        ]
        extra["cxx"] = cxx_flags + ["-DWITH_CUDA"]
        ext = CUDAExtension(
            "fastdeblur._C",
            sources,
            include_dirs=include_dirs,
            extra_compile_args=extra,
            extra_link_args=ldflags,
        )
    else:
        ext = CppExtension(
            "fastdeblur._C",
            sources,
            include_dirs=include_dirs,
            extra_compile_args=extra,
            extra_link_args=ldflags,
        )
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
