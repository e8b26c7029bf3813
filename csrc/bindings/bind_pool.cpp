// Pooling bindings: arguments arrive validated and normalized from Python
// (backends/native/pool.py computes the output size with nnkern._shapes).
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <algorithm>

#include <cstdint>
#include <limits>
#include <vector>

#include "bindings/arrays.h"
#include "bindings/families.h"
#include "pool/pool_op.h"

namespace nnkern::bindings {
namespace {

using Pair = std::pair<std::int64_t, std::int64_t>;

std::vector<py::ssize_t> shape_of(const py::array& a) { return {a.shape(), a.shape() + a.ndim()}; }

std::vector<py::ssize_t> pooled_shape(const py::array& x, std::int64_t oh, std::int64_t ow) {
  return {x.shape(0), x.shape(1), static_cast<py::ssize_t>(oh), static_cast<py::ssize_t>(ow)};
}

ops::Pool2dParams params(Pair kernel, Pair stride, Pair padding, Pair dilation) {
  return {kernel.first, kernel.second, stride.first, stride.second,
          padding.first, padding.second, dilation.first, dilation.second};
}

// A fresh int64 array of `shape`; a large one from the workspace's cached
// memory (no page faults), like empty_shaped's float outputs.
py::array empty_indices(const std::vector<py::ssize_t>& shape) {
  const py::dtype dt = py::dtype::of<std::int64_t>();
  std::size_t elements = 1;
  for (py::ssize_t d : shape) elements *= static_cast<std::size_t>(d);
  py::array a = elements * sizeof(std::int64_t) >= kCachedArrayBytes ? cached_array(dt, shape) : py::array(dt, shape);
  if (poison_outputs()) {
    std::fill_n(static_cast<std::int64_t*>(a.mutable_data()), elements, std::numeric_limits<std::int64_t>::min());
  }
  return a;
}

// (out, indices), or (out, None) when with_indices is false: the values alone.
py::tuple max_pool2d(const py::array& x_in, Pair kernel, Pair stride, Pair padding, Pair dilation, std::int64_t oh,
                     std::int64_t ow, bool with_indices) {
  const Dtype dtype = float_dtype(x_in, "max_pool2d", "x");
  const py::array x = c_contiguous(x_in);
  py::array out = empty_shaped(dtype, pooled_shape(x, oh, ow));
  py::object indices = py::none();
  std::int64_t* ix = nullptr;
  if (with_indices) {
    py::array a = empty_indices(pooled_shape(x, oh, ow));
    ix = static_cast<std::int64_t*>(a.mutable_data());
    indices = a;
  }
  const ArrayView xv = view_of(x, dtype), ov = view_of(out, dtype);
  const ops::Pool2dParams p = params(kernel, stride, padding, dilation);
  run_native([&] { ops::max_pool2d(xv, p, ov, ix); });
  return py::make_tuple(out, indices);
}

py::array max_pool2d_backward(const py::array& grad_in, const py::array& x, const py::array& indices_in) {
  const Dtype dtype = float_dtype(grad_in, "max_pool2d_backward", "grad_output");
  const py::array grad = c_contiguous(grad_in);
  const auto indices = c_contiguous_as<std::int64_t>(indices_in, "max_pool2d_backward", "indices");
  py::array grad_input = empty_shaped(dtype, shape_of(x));
  const ArrayView gv = view_of(grad, dtype), giv = view_of(grad_input, dtype);
  const std::int64_t* ix = indices.data();
  run_native([&] { ops::max_pool2d_backward(gv, ix, giv); });
  return grad_input;
}

py::array avg_pool2d(const py::array& x_in, Pair kernel, Pair stride, Pair padding, bool count_include_pad,
                     std::int64_t oh, std::int64_t ow) {
  const Dtype dtype = float_dtype(x_in, "avg_pool2d", "x");
  const py::array x = c_contiguous(x_in);
  py::array out = empty_shaped(dtype, pooled_shape(x, oh, ow));
  const ArrayView xv = view_of(x, dtype), ov = view_of(out, dtype);
  const ops::Pool2dParams p = params(kernel, stride, padding, {1, 1});
  run_native([&] { ops::avg_pool2d(xv, p, count_include_pad, ov); });
  return out;
}

py::array avg_pool2d_backward(const py::array& grad_in, const py::array& x, Pair kernel, Pair stride, Pair padding,
                              bool count_include_pad) {
  const Dtype dtype = float_dtype(grad_in, "avg_pool2d_backward", "grad_output");
  const py::array grad = c_contiguous(grad_in);
  py::array grad_input = empty_shaped(dtype, shape_of(x));
  const ArrayView gv = view_of(grad, dtype), giv = view_of(grad_input, dtype);
  const ops::Pool2dParams p = params(kernel, stride, padding, {1, 1});
  run_native([&] { ops::avg_pool2d_backward(gv, p, count_include_pad, giv); });
  return grad_input;
}

py::array adaptive_avg_pool2d(const py::array& x_in, std::int64_t oh, std::int64_t ow) {
  const Dtype dtype = float_dtype(x_in, "adaptive_avg_pool2d", "x");
  const py::array x = c_contiguous(x_in);
  py::array out = empty_shaped(dtype, pooled_shape(x, oh, ow));
  const ArrayView xv = view_of(x, dtype), ov = view_of(out, dtype);
  run_native([&] { ops::adaptive_avg_pool2d(xv, ov); });
  return out;
}

py::array adaptive_avg_pool2d_backward(const py::array& grad_in, const py::array& x) {
  const Dtype dtype = float_dtype(grad_in, "adaptive_avg_pool2d_backward", "grad_output");
  const py::array grad = c_contiguous(grad_in);
  py::array grad_input = empty_shaped(dtype, shape_of(x));
  const ArrayView gv = view_of(grad, dtype), giv = view_of(grad_input, dtype);
  run_native([&] { ops::adaptive_avg_pool2d_backward(gv, giv); });
  return grad_input;
}

}  // namespace

void bind_pool(py::module_& m) {
  using namespace py::literals;
  m.def("max_pool2d", &max_pool2d, "x"_a, "kernel"_a, "stride"_a, "padding"_a, "dilation"_a, "oh"_a, "ow"_a,
        "with_indices"_a = true,
        "Max pooling (NCHW) with PyTorch's int64 indices (None when with_indices is false); output size given by "
        "the caller.");
  m.def("max_pool2d_backward", &max_pool2d_backward, "grad_output"_a, "x"_a, "indices"_a,
        "Scatter-add of grad_output to the saved indices, one task per plane.");
  m.def("avg_pool2d", &avg_pool2d, "x"_a, "kernel"_a, "stride"_a, "padding"_a, "count_include_pad"_a, "oh"_a, "ow"_a,
        "Average pooling (NCHW) with PyTorch's divisors.");
  m.def("avg_pool2d_backward", &avg_pool2d_backward, "grad_output"_a, "x"_a, "kernel"_a, "stride"_a, "padding"_a,
        "count_include_pad"_a, "Average pooling gradient.");
  m.def("adaptive_avg_pool2d", &adaptive_avg_pool2d, "x"_a, "oh"_a, "ow"_a, "Adaptive average pooling (NCHW).");
  m.def("adaptive_avg_pool2d_backward", &adaptive_avg_pool2d_backward, "grad_output"_a, "x"_a,
        "Adaptive average pooling gradient.");
}

}  // namespace nnkern::bindings
