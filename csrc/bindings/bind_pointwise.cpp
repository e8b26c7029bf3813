// sigmoid, tanh, softmax, log_softmax, cross-entropy and dropout, forward and
// backward. Arguments arrive validated (shapes, dim range, target range) from
// nnkern.functional; here only dtypes are checked and inputs made contiguous.
#include <cstdint>
#include <string>
#include <vector>

#include "bindings/arrays.h"
#include "bindings/families.h"
#include "vmath/pointwise_op.h"
#include "vmath/softmax_op.h"

namespace nnkern::bindings {
namespace {

Dtype same_dtype(const char* op, const py::array& a, const char* a_name, const py::array& b, const char* b_name) {
  const Dtype dtype = float_dtype(a, op, a_name);
  if (float_dtype(b, op, b_name) != dtype) {
    throw type_error(std::string(op) + ": " + a_name + " and " + b_name + " must have one dtype, got " +
                     py::str(a.dtype()).cast<std::string>() + " and " + py::str(b.dtype()).cast<std::string>());
  }
  return dtype;
}

template <void (*Op)(const ArrayView&, const ArrayView&)>
py::array unary(const char* name, const py::array& x_in) {
  const Dtype dtype = float_dtype(x_in, name, "x");
  const py::array x = c_contiguous(x_in);
  py::array y = empty_c(dtype, x);
  const ArrayView xv = view_of(x, dtype), yv = view_of(y, dtype);
  run_native([&] { Op(xv, yv); });
  return y;
}

template <void (*Op)(const ArrayView&, const ArrayView&, const ArrayView&)>
py::array unary_backward(const char* name, const py::array& grad_in, const py::array& out_in) {
  const Dtype dtype = same_dtype(name, grad_in, "grad_output", out_in, "output");
  const py::array grad = c_contiguous(grad_in), out = c_contiguous(out_in);
  py::array grad_input = empty_c(dtype, grad);
  const ArrayView gv = view_of(grad, dtype), ov = view_of(out, dtype), giv = view_of(grad_input, dtype);
  run_native([&] { Op(gv, ov, giv); });
  return grad_input;
}

py::array softmax_any(const char* name, bool log, const py::array& x_in, std::size_t dim) {
  const Dtype dtype = float_dtype(x_in, name, "x");
  const py::array x = c_contiguous(x_in);
  py::array y = empty_c(dtype, x);
  const ArrayView xv = view_of(x, dtype), yv = view_of(y, dtype);
  run_native([&] { ops::softmax(xv, dim, log, yv); });
  return y;
}

py::array softmax_backward_any(const char* name, bool log, const py::array& grad_in, const py::array& out_in,
                               std::size_t dim) {
  const Dtype dtype = same_dtype(name, grad_in, "grad_output", out_in, "output");
  const py::array grad = c_contiguous(grad_in), out = c_contiguous(out_in);
  py::array grad_input = empty_c(dtype, grad);
  const ArrayView gv = view_of(grad, dtype), ov = view_of(out, dtype), giv = view_of(grad_input, dtype);
  run_native([&] { ops::softmax_backward(gv, ov, dim, log, giv); });
  return grad_input;
}

using Targets = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>;

py::tuple dropout(const py::array& x_in, double p, std::uint64_t seed) {
  const Dtype dtype = float_dtype(x_in, "dropout", "x");
  const py::array x = c_contiguous(x_in);
  py::array y = empty_c(dtype, x);
  py::array_t<bool> mask(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
  bool* keep = mask.mutable_data();
  const ArrayView xv = view_of(x, dtype), yv = view_of(y, dtype);
  run_native([&] { ops::dropout(xv, p, seed, yv, keep); });
  return py::make_tuple(y, mask);
}

py::array dropout_backward(const py::array& grad_in, const py::array& mask_in, double p) {
  const Dtype dtype = float_dtype(grad_in, "dropout_backward", "grad_output");
  const py::array grad = c_contiguous(grad_in);
  const auto mask = c_contiguous_as<bool>(mask_in, "dropout_backward", "mask");
  py::array grad_input = empty_c(dtype, grad);
  const bool* keep = mask.data();
  const ArrayView gv = view_of(grad, dtype), giv = view_of(grad_input, dtype);
  run_native([&] { ops::dropout_backward(gv, keep, p, giv); });
  return grad_input;
}

py::array cross_entropy(const py::array& logits_in, const Targets& target) {
  const Dtype dtype = float_dtype(logits_in, "cross_entropy", "logits");
  const py::array logits = c_contiguous(logits_in);
  py::array loss = dtype == Dtype::f32 ? py::array(py::dtype::of<float>(), std::vector<py::ssize_t>{})
                                       : py::array(py::dtype::of<double>(), std::vector<py::ssize_t>{});
  const ArrayView lv = view_of(logits, dtype), out = view_of(loss, dtype);
  const std::int64_t* t = target.data();
  run_native([&] { ops::cross_entropy(lv, t, out); });
  return loss;
}

py::array cross_entropy_backward(const py::array& grad_loss, const py::array& logits_in, const Targets& target) {
  const Dtype dtype = same_dtype("cross_entropy_backward", grad_loss, "grad_loss", logits_in, "logits");
  const double g = py::float_(grad_loss.attr("item")()).cast<double>();
  const py::array logits = c_contiguous(logits_in);
  py::array grad = empty_c(dtype, logits);
  const ArrayView lv = view_of(logits, dtype), gv = view_of(grad, dtype);
  const std::int64_t* t = target.data();
  run_native([&] { ops::cross_entropy_backward(g, lv, t, gv); });
  return grad;
}

}  // namespace

void bind_pointwise(pybind11::module_& m) {
  m.def("sigmoid", [](const py::array& x) { return unary<ops::sigmoid>("sigmoid", x); }, py::arg("x"));
  m.def("tanh", [](const py::array& x) { return unary<ops::tanh>("tanh", x); }, py::arg("x"));
  m.def("sigmoid_backward",
        [](const py::array& g, const py::array& o) { return unary_backward<ops::sigmoid_backward>("sigmoid_backward", g, o); },
        py::arg("grad_output"), py::arg("output"));
  m.def("tanh_backward",
        [](const py::array& g, const py::array& o) { return unary_backward<ops::tanh_backward>("tanh_backward", g, o); },
        py::arg("grad_output"), py::arg("output"));
  m.def("softmax", [](const py::array& x, std::size_t dim) { return softmax_any("softmax", false, x, dim); },
        py::arg("x"), py::arg("dim"));
  m.def("log_softmax", [](const py::array& x, std::size_t dim) { return softmax_any("log_softmax", true, x, dim); },
        py::arg("x"), py::arg("dim"));
  m.def("softmax_backward",
        [](const py::array& g, const py::array& o, std::size_t dim) {
          return softmax_backward_any("softmax_backward", false, g, o, dim);
        },
        py::arg("grad_output"), py::arg("output"), py::arg("dim"));
  m.def("log_softmax_backward",
        [](const py::array& g, const py::array& o, std::size_t dim) {
          return softmax_backward_any("log_softmax_backward", true, g, o, dim);
        },
        py::arg("grad_output"), py::arg("output"), py::arg("dim"));
  m.def("dropout", &dropout, py::arg("x"), py::arg("p"), py::arg("seed"));
  m.def("dropout_backward", &dropout_backward, py::arg("grad_output"), py::arg("mask"), py::arg("p"));
  m.def("cross_entropy", &cross_entropy, py::arg("logits"), py::arg("target"));
  m.def("cross_entropy_backward", &cross_entropy_backward, py::arg("grad_loss"), py::arg("logits"), py::arg("target"));
}

}  // namespace nnkern::bindings
