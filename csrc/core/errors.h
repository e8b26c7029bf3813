// C++ exceptions that reach Python as ValueError / TypeError.
//
// value_error derives from std::invalid_argument, which pybind11 already
// translates to ValueError; type_error is translated by the module
// (bindings/module.cpp). Allocation failures throw std::bad_alloc, which
// pybind11 turns into MemoryError.
#pragma once

#include <stdexcept>
#include <string>

namespace nnkern {

struct value_error : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

struct type_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace nnkern
