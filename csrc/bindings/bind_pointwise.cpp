#include "bindings/families.h"

namespace nnkern::bindings {

void bind_pointwise(pybind11::module_&) {}

}  // namespace nnkern::bindings
