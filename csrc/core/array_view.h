// A borrowed n-d array: pointer, shape, strides (in elements) and dtype.
//
// Operators receive views of C-contiguous memory only: the binding layer
// (bindings/arrays.h) makes a non-contiguous input contiguous once, before
// the view is built, so no kernel ever handles strides it cannot vectorize.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace nnkern {

enum class Dtype { f32, f64 };

struct ArrayView {
  void* data = nullptr;
  std::vector<std::int64_t> shape;
  std::vector<std::int64_t> strides;  // in elements
  Dtype dtype = Dtype::f32;

  std::size_t size() const {
    std::size_t n = 1;
    for (std::int64_t d : shape) n *= static_cast<std::size_t>(d);
    return n;
  }
  template <class T>
  T* as() const { return static_cast<T*>(data); }
};

}  // namespace nnkern
