#include <string>
#include <vector>

#include "bindings/arrays.h"
#include "bindings/families.h"
#include "norm/batch_norm_op.h"

namespace nnkern::bindings {
namespace {

// A (C,) vector argument that may be None: its contiguous form (kept alive by
// `keep`) and view, or an empty view for None.
ArrayView optional_view(const py::object& obj, Dtype dtype, const char* op, const char* arg, py::array& keep) {
  if (obj.is_none()) return ArrayView{};
  const py::array a = py::reinterpret_borrow<py::array>(obj);
  if (float_dtype(a, op, arg) != dtype) {
    throw type_error(std::string(op) + ": " + arg + " must have the dtype of the input, got " +
                     py::str(a.dtype()).cast<std::string>());
  }
  keep = c_contiguous(a);
  return view_of(keep, dtype);
}

py::array empty_vector(Dtype dtype, py::ssize_t n) {
  const std::vector<py::ssize_t> shape{n};
  return dtype == Dtype::f32 ? py::array(py::dtype::of<float>(), shape) : py::array(py::dtype::of<double>(), shape);
}

py::tuple batch_norm(const py::array& x_in, const py::object& running_mean, const py::object& running_var,
                     const py::object& weight, const py::object& bias, bool training, double momentum, double eps,
                     const py::object& activation, const py::object& residual) {
  const char* op = "batch_norm";
  const Dtype dtype = float_dtype(x_in, op, "input");
  const py::array x = c_contiguous(x_in);
  py::array rm_keep, rv_keep, w_keep, b_keep;
  const ArrayView rmv = optional_view(running_mean, dtype, op, "running_mean", rm_keep);
  const ArrayView rvv = optional_view(running_var, dtype, op, "running_var", rv_keep);
  const ArrayView wv = optional_view(weight, dtype, op, "weight", w_keep);
  const ArrayView bv = optional_view(bias, dtype, op, "bias", b_keep);
  py::array r_keep;
  const ArrayView resv = optional_view(residual, dtype, op, "residual", r_keep);
  if (!residual.is_none() && resv.shape != view_of(x, dtype).shape) {
    throw py::value_error(std::string(op) + ": residual must have the shape of the input");
  }
  const bool relu = !activation.is_none() && activation.cast<std::string>() == "relu";
  py::array out = empty_c(dtype, x);
  py::array mean = empty_vector(dtype, x.shape(1));
  py::array invstd = empty_vector(dtype, x.shape(1));
  const ArrayView xv = view_of(x, dtype), ov = view_of(out, dtype);
  const ArrayView mv = view_of(mean, dtype), iv = view_of(invstd, dtype);
  run_native([&] { ops::batch_norm(xv, rmv, rvv, wv, bv, training, momentum, eps, relu, resv, ov, mv, iv); });
  // The running statistics are updated in place: when a contiguous copy was
  // updated instead, write it back into the caller's array.
  if (training) {
    if (!running_mean.is_none() && !rm_keep.is(running_mean)) running_mean[py::ellipsis()] = rm_keep;
    if (!running_var.is_none() && !rv_keep.is(running_var)) running_var[py::ellipsis()] = rv_keep;
  }
  return py::make_tuple(out, mean, invstd);
}

py::tuple batch_norm_backward(const py::array& g_in, const py::array& x_in, const py::object& weight,
                              const py::array& mean_in, const py::array& invstd_in, bool training,
                              const py::sequence& output_mask) {
  const char* op = "batch_norm_backward";
  const Dtype dtype = float_dtype(x_in, op, "input");
  py::array g_keep, mean_keep, invstd_keep, w_keep;
  const ArrayView gv = optional_view(g_in, dtype, op, "grad_output", g_keep);
  const ArrayView mv = optional_view(mean_in, dtype, op, "mean", mean_keep);
  const ArrayView iv = optional_view(invstd_in, dtype, op, "invstd", invstd_keep);
  const ArrayView wv = optional_view(weight, dtype, op, "weight", w_keep);
  const py::array x = c_contiguous(x_in);
  const ArrayView xv = view_of(x, dtype);
  py::object gi = py::none(), gw = py::none(), gb = py::none();
  ArrayView giv, gwv, gbv;
  if (py::bool_(output_mask[0])) {
    gi = empty_c(dtype, x);
    giv = view_of(gi.cast<py::array>(), dtype);
  }
  if (py::bool_(output_mask[1])) {
    gw = empty_vector(dtype, x.shape(1));
    gwv = view_of(gw.cast<py::array>(), dtype);
  }
  if (py::bool_(output_mask[2])) {
    gb = empty_vector(dtype, x.shape(1));
    gbv = view_of(gb.cast<py::array>(), dtype);
  }
  run_native([&] { ops::batch_norm_backward(gv, xv, wv, mv, iv, training, giv, gwv, gbv); });
  return py::make_tuple(gi, gw, gb);
}

}  // namespace

void bind_norm(pybind11::module_& m) {
  m.def("batch_norm", &batch_norm, py::arg("x"), py::arg("running_mean"), py::arg("running_var"), py::arg("weight"),
        py::arg("bias"), py::arg("training"), py::arg("momentum"), py::arg("eps"), py::arg("activation"),
        py::arg("residual"),
        "(out, mean, invstd) of batch normalization over axis 1 of x (N, C, *), out = act(bn(x) + residual) "
        "(activation None or \"relu\", residual of x's shape or None); in training the running statistics "
        "(when given) are updated in place.");
  m.def("batch_norm_backward", &batch_norm_backward, py::arg("grad_output"), py::arg("x"), py::arg("weight"),
        py::arg("mean"), py::arg("invstd"), py::arg("training"), py::arg("output_mask"),
        "(grad_input, grad_weight, grad_bias) of batch_norm; an entry is None where output_mask is False.");
}

}  // namespace nnkern::bindings
