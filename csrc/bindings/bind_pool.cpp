#include "bindings/families.h"

namespace nnkern::bindings {

void bind_pool(pybind11::module_&) {}

}  // namespace nnkern::bindings
