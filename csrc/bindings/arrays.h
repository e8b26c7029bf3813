// NumPy <-> ArrayView: the one place where inputs are checked for dtype and
// made C-contiguous, and where native calls drop the GIL.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "core/array_view.h"
#include "core/errors.h"
#include "core/fp_env.h"
#include "core/workspace.h"

namespace nnkern::bindings {

namespace py = pybind11;

inline Dtype float_dtype(const py::array& a, const char* op, const char* arg) {
  if (py::isinstance<py::array_t<float>>(a)) return Dtype::f32;
  if (py::isinstance<py::array_t<double>>(a)) return Dtype::f64;
  throw type_error(std::string(op) + ": " + arg + " must be float32 or float64, got " +
                   py::str(a.dtype()).cast<std::string>());
}

// The array itself when already C-contiguous, else one C-contiguous copy.
// Not py::array::ensure: when the copy fails (a broadcast view of 2^40
// elements cannot be allocated) it clears NumPy's MemoryError and returns an
// empty handle, whose data pointer is null. The same NumPy call (what ensure
// runs), but NumPy's error is raised.
inline py::array c_contiguous(const py::array& a) {
  if (a.flags() & py::array::c_style) return a;
  PyObject* copy = py::detail::npy_api::get().PyArray_FromAny_(
      a.ptr(), nullptr, 0, 0, py::detail::npy_api::NPY_ARRAY_ENSUREARRAY_ | py::array::c_style, nullptr);
  if (copy == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::array>(copy);
}

// `a` as a C-contiguous array of T (a copy only when its layout or dtype
// differs); a failed conversion raises instead of returning an empty handle.
template <class T>
py::array_t<T, py::array::c_style | py::array::forcecast> c_contiguous_as(const py::array& a, const char* op,
                                                                        const char* arg) {
  auto converted = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(c_contiguous(a));
  if (!converted) {
    throw type_error(std::string(op) + ": " + arg + " could not be converted to " +
                     py::str(py::dtype::of<T>()).cast<std::string>());
  }
  return converted;
}

inline ArrayView view_of(const py::array& a, Dtype dtype) {
  ArrayView v;
  v.data = const_cast<void*>(a.data());
  v.dtype = dtype;
  const auto item = static_cast<py::ssize_t>(a.itemsize());
  for (py::ssize_t d = 0; d < a.ndim(); ++d) {
    v.shape.push_back(a.shape(d));
    v.strides.push_back(a.strides(d) / item);
  }
  return v;
}

// NNKERN_POISON_OUTPUTS=1 (the test suite sets it) fills every fresh output
// with NaN before a kernel writes it, so an element a kernel forgets to write
// shows up as NaN instead of whatever the allocator left there.
inline bool poison_outputs() {
  static const bool on = [] {
    const char* v = std::getenv("NNKERN_POISON_OUTPUTS");
    return v != nullptr && v[0] != '\0' && v[0] != '0';
  }();
  return on;
}

// Arrays of at least this many bytes take their memory from the workspace
// cache (acquire_array_memory): pages already faulted in by an earlier array.
constexpr std::size_t kCachedArrayBytes = std::size_t{256} << 10;

// A C-contiguous array of `shape` on memory of the workspace cache, which
// gets the memory back when the array is freed.
inline py::array cached_array(const py::dtype& dt, const std::vector<py::ssize_t>& shape) {
  std::size_t bytes = static_cast<std::size_t>(dt.itemsize());
  for (py::ssize_t d : shape) bytes *= static_cast<std::size_t>(d);
  auto* buffer = new ScratchBuffer(acquire_array_memory(bytes));
  py::capsule owner(buffer, [](void* p) { delete static_cast<ScratchBuffer*>(p); });
  return py::array(dt, shape, buffer->data(), owner);
}

// A fresh C-contiguous array of `shape` (NaN-poisoned under NNKERN_POISON_OUTPUTS).
inline py::array empty_shaped(Dtype dtype, const std::vector<py::ssize_t>& shape) {
  const py::dtype dt = dtype == Dtype::f32 ? py::dtype::of<float>() : py::dtype::of<double>();
  std::size_t elements = 1;
  for (py::ssize_t d : shape) elements *= static_cast<std::size_t>(d);
  py::array out = elements * static_cast<std::size_t>(dt.itemsize()) >= kCachedArrayBytes ? cached_array(dt, shape)
                                                                                           : py::array(dt, shape);
  if (poison_outputs()) {
    py::gil_scoped_release nogil;  // filling a large output is slow: let other Python threads run
    const auto n = static_cast<std::size_t>(out.size());
    if (dtype == Dtype::f32) {
      std::fill_n(static_cast<float*>(out.mutable_data()), n, std::numeric_limits<float>::quiet_NaN());
    } else {
      std::fill_n(static_cast<double*>(out.mutable_data()), n, std::numeric_limits<double>::quiet_NaN());
    }
  }
  return out;
}

// A fresh C-contiguous array shaped like `like`.
inline py::array empty_c(Dtype dtype, const py::array& like) {
  return empty_shaped(dtype, std::vector<py::ssize_t>(like.shape(), like.shape() + like.ndim()));
}

// Runs a native call without the GIL and with denormals flushed (fp_env.h).
template <class F>
void run_native(F&& f) {
  py::gil_scoped_release nogil;
  FlushDenormalsGuard fp;
  std::forward<F>(f)();
}

}  // namespace nnkern::bindings
