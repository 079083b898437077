"""Triton kernels (GPU path; run on CPU tensors under ``TRITON_INTERPRET=1``)."""
