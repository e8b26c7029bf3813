#include "bindings/families.h"

namespace nnkern::bindings {

void bind_norm(pybind11::module_&) {}

}  // namespace nnkern::bindings
