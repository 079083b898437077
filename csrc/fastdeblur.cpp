// Module init for fastdeblur._C. The ops register themselves through
// TORCH_LIBRARY_FRAGMENT / TORCH_LIBRARY_IMPL in csrc/ops, csrc/cpu and csrc/cuda;
// importing the module is what runs those registrations.
#include <Python.h>

PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "fastdeblur native ops (registered under torch.ops.fastdeblur)",
      -1, nullptr};
  return PyModule_Create(&module_def);
}
