// conv2d / conv2d_backward: the backend contract's arguments (docs/design.md)
// turned into a ConvGeometry and contiguous views for conv/conv_op.h.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <limits>
#include <string>
#include <vector>

#include "bindings/arrays.h"
#include "bindings/families.h"
#include "conv/conv_op.h"
#include "conv/winograd_op.h"
#include "core/errors.h"

namespace nnkern::bindings {
namespace {

std::size_t item(const py::sequence& s, std::size_t i) { return s[i].cast<std::size_t>(); }

Dtype same_dtype(Dtype dtype, const py::array& a, const char* op, const char* arg) {
  const Dtype d = float_dtype(a, op, arg);
  if (d != dtype) {
    throw type_error(std::string(op) + ": input and " + arg + " must have one dtype, got " +
                     (dtype == Dtype::f32 ? "float32" : "float64") + " and " +
                     py::str(a.dtype()).cast<std::string>());
  }
  return d;
}

ops::ConvGeometry geometry(const py::array& x, const py::array& w, const py::sequence& stride,
                           const py::sequence& padding, const py::sequence& dilation, std::size_t groups) {
  ops::ConvGeometry g{};
  g.n = static_cast<std::size_t>(x.shape(0));
  g.c = static_cast<std::size_t>(x.shape(1));
  g.h = static_cast<std::size_t>(x.shape(2));
  g.w = static_cast<std::size_t>(x.shape(3));
  g.o = static_cast<std::size_t>(w.shape(0));
  g.kh = static_cast<std::size_t>(w.shape(2));
  g.kw = static_cast<std::size_t>(w.shape(3));
  g.sh = item(stride, 0);
  g.sw = item(stride, 1);
  g.pt = item(padding, 0);
  g.pl = item(padding, 2);
  g.dh = item(dilation, 0);
  g.dw = item(dilation, 1);
  g.groups = groups;
  g.oh = (g.h + g.pt + item(padding, 1) - g.dh * (g.kh - 1) - 1) / g.sh + 1;
  g.ow = (g.w + g.pl + item(padding, 3) - g.dw * (g.kw - 1) - 1) / g.sw + 1;
  return g;
}


py::array conv2d(const py::array& x_in, const py::array& w_in, const py::object& bias_in,
                 const py::sequence& stride, const py::sequence& padding, const py::sequence& dilation,
                 std::size_t groups, const py::object& activation, const py::object& residual_in) {
  const Dtype dtype = float_dtype(x_in, "conv2d", "input");
  same_dtype(dtype, w_in, "conv2d", "weight");
  const py::array x = c_contiguous(x_in), w = c_contiguous(w_in);
  const ops::ConvGeometry g = geometry(x, w, stride, padding, dilation, groups);
  py::array out = empty_shaped(dtype, {static_cast<py::ssize_t>(g.n), static_cast<py::ssize_t>(g.o),
                                       static_cast<py::ssize_t>(g.oh), static_cast<py::ssize_t>(g.ow)});
  py::array bias, residual;
  ArrayView bv, rv;
  if (!bias_in.is_none()) {
    bias = c_contiguous(bias_in.cast<py::array>());
    bv = view_of(bias, same_dtype(dtype, bias, "conv2d", "bias"));
  }
  if (!residual_in.is_none()) {
    residual = c_contiguous(residual_in.cast<py::array>());
    rv = view_of(residual, same_dtype(dtype, residual, "conv2d", "residual"));
  }
  const bool relu = !activation.is_none() && activation.cast<std::string>() == "relu";
  const ArrayView xv = view_of(x, dtype), wv = view_of(w, dtype), ov = view_of(out, dtype);
  run_native([&] {
    ops::conv2d(g, xv, wv, bias_in.is_none() ? nullptr : &bv, residual_in.is_none() ? nullptr : &rv, relu, ov);
  });
  return out;
}

py::tuple conv2d_backward(const py::array& go_in, const py::array& x_in, const py::array& w_in,
                          const py::sequence& stride, const py::sequence& padding, const py::sequence& dilation,
                          std::size_t groups, const py::sequence& output_mask) {
  const Dtype dtype = float_dtype(x_in, "conv2d_backward", "input");
  same_dtype(dtype, go_in, "conv2d_backward", "grad_output");
  same_dtype(dtype, w_in, "conv2d_backward", "weight");
  const py::array go = c_contiguous(go_in), x = c_contiguous(x_in), w = c_contiguous(w_in);
  const ops::ConvGeometry g = geometry(x, w, stride, padding, dilation, groups);
  py::object gx = py::none(), gw = py::none(), gb = py::none();
  ArrayView gxv, gwv, gbv;
  if (output_mask[0].cast<bool>()) {
    py::array a = empty_c(dtype, x);
    gxv = view_of(a, dtype);
    gx = a;
  }
  if (output_mask[1].cast<bool>()) {
    py::array a = empty_c(dtype, w);
    gwv = view_of(a, dtype);
    gw = a;
  }
  if (output_mask[2].cast<bool>()) {
    py::array a = empty_shaped(dtype, {static_cast<py::ssize_t>(g.o)});
    gbv = view_of(a, dtype);
    gb = a;
  }
  const ArrayView gov = view_of(go, dtype), xv = view_of(x, dtype), wv = view_of(w, dtype);
  run_native([&] {
    ops::conv2d_backward(g, gov, xv, wv, gx.is_none() ? nullptr : &gxv, gw.is_none() ? nullptr : &gwv,
                         gb.is_none() ? nullptr : &gbv);
  });
  return py::make_tuple(gx, gw, gb);
}

}  // namespace

void bind_conv(py::module_& m) {
  m.def("conv2d", &conv2d, py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("stride"),
        py::arg("padding"), py::arg("dilation"), py::arg("groups"), py::arg("activation"), py::arg("residual"),
        "act(conv2d(x, weight) + bias + residual), NCHW; padding (top, bottom, left, right).");
  m.def("conv2d_backward", &conv2d_backward, py::arg("grad_output"), py::arg("x"), py::arg("weight"),
        py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("groups"), py::arg("output_mask"),
        "(grad_input, grad_weight, grad_bias) of conv2d; None where output_mask is False.");
  m.def(
      "set_conv_algorithm",
      [](const std::string& name) {
        if (name != "auto" && name != "direct") {
          throw value_error("set_conv_algorithm: algorithm must be 'auto' or 'direct', got '" + name + "'");
        }
        ops::set_winograd_allowed(name == "auto");
      },
      py::arg("name"), "'auto': Winograd where it applies (default); 'direct': never Winograd.");
  m.def(
      "get_conv_algorithm", [] { return std::string(ops::winograd_allowed() ? "auto" : "direct"); },
      "The algorithm choice set by set_conv_algorithm.");
}

}  // namespace nnkern::bindings
