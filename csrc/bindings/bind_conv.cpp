#include "bindings/families.h"

namespace nnkern::bindings {

void bind_conv(pybind11::module_&) {}

}  // namespace nnkern::bindings
