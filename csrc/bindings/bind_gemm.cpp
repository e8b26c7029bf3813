#include "bindings/families.h"

namespace nnkern::bindings {

void bind_gemm(pybind11::module_&) {}

}  // namespace nnkern::bindings
