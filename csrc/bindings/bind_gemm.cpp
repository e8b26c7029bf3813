// linear / linear_backward, and _test_gemm: the GEMM of gemm/gemm.h on raw
// (possibly strided or transposed) arrays under a chosen kernel family, for
// the micro-kernel edge tests.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <limits>
#include <string>
#include <vector>

#include "bindings/arrays.h"
#include "bindings/families.h"
#include "core/cpu_features.h"
#include "core/errors.h"
#include "gemm/gemm.h"
#include "gemm/linear_op.h"

namespace nnkern::bindings {
namespace {

using Shape = std::vector<py::ssize_t>;


Dtype same_dtype(Dtype dtype, const py::array& a, const char* op, const char* arg, const char* first) {
  const Dtype d = float_dtype(a, op, arg);
  if (d != dtype) {
    throw type_error(std::string(op) + ": " + first + " and " + arg + " must have one dtype, got " +
                     (dtype == Dtype::f32 ? "float32" : "float64") + " and " +
                     py::str(a.dtype()).cast<std::string>());
  }
  return d;
}

// A 2-D view of a C-contiguous array as (rows, cols).
ArrayView matrix(const py::array& a, Dtype dtype, std::size_t rows, std::size_t cols) {
  ArrayView v;
  v.data = const_cast<void*>(a.data());
  v.dtype = dtype;
  v.shape = {static_cast<std::int64_t>(rows), static_cast<std::int64_t>(cols)};
  v.strides = {static_cast<std::int64_t>(cols), 1};
  return v;
}

std::size_t leading_size(const py::array& x) {
  std::size_t m = 1;
  for (py::ssize_t d = 0; d + 1 < x.ndim(); ++d) m *= static_cast<std::size_t>(x.shape(d));
  return m;
}

py::array linear(const py::array& x_in, const py::array& w_in, const py::object& bias_in) {
  const Dtype dtype = float_dtype(x_in, "linear", "input");
  same_dtype(dtype, w_in, "linear", "weight", "input");
  const py::array x = c_contiguous(x_in), w = c_contiguous(w_in);
  const std::size_t n = static_cast<std::size_t>(w.shape(0)), k = static_cast<std::size_t>(w.shape(1));
  const std::size_t m = leading_size(x);
  Shape out_shape(x.shape(), x.shape() + x.ndim() - 1);
  out_shape.push_back(static_cast<py::ssize_t>(n));
  py::array out = empty_shaped(dtype, out_shape);
  py::array bias;
  ArrayView bias_view;
  if (!bias_in.is_none()) {
    bias = c_contiguous(bias_in.cast<py::array>());
    same_dtype(dtype, bias, "linear", "bias", "input");
    bias_view = matrix(bias, dtype, 1, n);
  }
  const ArrayView xv = matrix(x, dtype, m, k), wv = matrix(w, dtype, n, k), ov = matrix(out, dtype, m, n);
  const ArrayView* bp = bias_in.is_none() ? nullptr : &bias_view;
  run_native([&] { ops::linear(xv, wv, bp, ov); });
  return out;
}

py::tuple linear_backward(const py::array& g_in, const py::array& x_in, const py::array& w_in,
                          const py::sequence& output_mask) {
  const Dtype dtype = float_dtype(g_in, "linear_backward", "grad_output");
  same_dtype(dtype, x_in, "linear_backward", "input", "grad_output");
  same_dtype(dtype, w_in, "linear_backward", "weight", "grad_output");
  const py::array g = c_contiguous(g_in), x = c_contiguous(x_in), w = c_contiguous(w_in);
  const std::size_t n = static_cast<std::size_t>(w.shape(0)), k = static_cast<std::size_t>(w.shape(1));
  const std::size_t m = leading_size(x);
  const bool want_x = output_mask[0].cast<bool>(), want_w = output_mask[1].cast<bool>(),
             want_b = output_mask[2].cast<bool>();
  py::object gx = py::none(), gw = py::none(), gb = py::none();
  ArrayView gxv, gwv, gbv;
  if (want_x) {
    py::array a = empty_shaped(dtype, Shape(x.shape(), x.shape() + x.ndim()));
    gxv = matrix(a, dtype, m, k);
    gx = a;
  }
  if (want_w) {
    py::array a = empty_shaped(dtype, Shape(w.shape(), w.shape() + w.ndim()));
    gwv = matrix(a, dtype, n, k);
    gw = a;
  }
  if (want_b) {
    py::array a = empty_shaped(dtype, Shape{static_cast<py::ssize_t>(n)});
    gbv = matrix(a, dtype, 1, n);
    gb = a;
  }
  const ArrayView gv = matrix(g, dtype, m, n), xv = matrix(x, dtype, m, k), wv = matrix(w, dtype, n, k);
  run_native([&] {
    ops::linear_backward(gv, xv, wv, want_x ? &gxv : nullptr, want_w ? &gwv : nullptr, want_b ? &gbv : nullptr);
  });
  return py::make_tuple(gx, gw, gb);
}

Isa isa_named(const std::string& name) {
  for (Isa isa : supported_isas()) {
    if (name == isa_name(isa)) return isa;
  }
  throw value_error("_test_gemm: isa must be one this CPU supports, got '" + name + "'");
}

template <class T>
gemm::MatrixRef<T> operand(const py::array& a, bool trans) {
  const auto item = static_cast<py::ssize_t>(sizeof(T));
  gemm::MatrixRef<T> r{static_cast<const T*>(a.data()), a.strides(0) / item, a.strides(1) / item};
  if (trans) std::swap(r.row_stride, r.col_stride);
  return r;
}

template <class T>
void test_gemm_typed(const py::array& a, const py::array& b, py::array& c, bool trans_a, bool trans_b, double alpha,
                     double beta, const py::object& bias_in, Isa isa) {
  gemm::GemmArgs<T> g;
  g.m = static_cast<std::size_t>(c.shape(0));
  g.n = static_cast<std::size_t>(c.shape(1));
  g.k = static_cast<std::size_t>(a.shape(trans_a ? 0 : 1));
  if (static_cast<std::size_t>(a.shape(trans_a ? 1 : 0)) != g.m ||
      static_cast<std::size_t>(b.shape(trans_b ? 1 : 0)) != g.k ||
      static_cast<std::size_t>(b.shape(trans_b ? 0 : 1)) != g.n) {
    throw value_error("_test_gemm: op(a) @ op(b) does not match c's shape");
  }
  g.a = operand<T>(a, trans_a);
  g.b = operand<T>(b, trans_b);
  g.alpha = static_cast<T>(alpha);
  g.beta = static_cast<T>(beta);
  g.c = static_cast<T*>(c.mutable_data());
  g.ldc = g.n;
  py::array bias;
  if (!bias_in.is_none()) {
    bias = c_contiguous(bias_in.cast<py::array>());
    if (bias.ndim() != 1 || static_cast<std::size_t>(bias.shape(0)) != g.n) {
      throw value_error("_test_gemm: bias must have c.shape[1] elements");
    }
    g.bias = static_cast<const T*>(bias.data());
  }
  run_native([&] { gemm::gemm(g, isa); });
}

// alpha * op(a) @ op(b) + beta * c (+ bias) in a fresh array; a and b keep
// their strides (slices, transposes, negative strides reach the packing).
py::array test_gemm(const py::array& a, const py::array& b, const py::array& c_in, bool trans_a, bool trans_b,
                    double alpha, double beta, const py::object& bias, const std::string& isa_name_in) {
  const Dtype dtype = float_dtype(c_in, "_test_gemm", "c");
  same_dtype(dtype, a, "_test_gemm", "a", "c");
  same_dtype(dtype, b, "_test_gemm", "b", "c");
  if (a.ndim() != 2 || b.ndim() != 2 || c_in.ndim() != 2) throw value_error("_test_gemm: a, b, c must be 2-D");
  const Isa isa = isa_named(isa_name_in);
  py::array c = py::module_::import("numpy").attr("array")(c_in, py::arg("order") = "C");  // a copy
  if (dtype == Dtype::f32) {
    test_gemm_typed<float>(a, b, c, trans_a, trans_b, alpha, beta, bias, isa);
  } else {
    test_gemm_typed<double>(a, b, c, trans_a, trans_b, alpha, beta, bias, isa);
  }
  return c;
}

template <class T>
void test_prepared_a_typed(const py::array& a, const py::array& b, py::array& c, double alpha, double beta,
                           const py::object& bias_in, Isa isa, gemm::BSource source, const py::object& row_bias_in) {
  const auto m = static_cast<std::size_t>(c.shape(0)), n = static_cast<std::size_t>(c.shape(1));
  const auto k = static_cast<std::size_t>(a.shape(1));
  if (static_cast<std::size_t>(a.shape(0)) != m || static_cast<std::size_t>(b.shape(0)) != k ||
      static_cast<std::size_t>(b.shape(1)) != n) {
    throw value_error("_test_prepared_a: a @ b does not match c's shape");
  }
  py::array bias;
  const T* bias_ptr = nullptr;
  if (!bias_in.is_none()) {
    bias = c_contiguous(bias_in.cast<py::array>());
    if (bias.ndim() != 1 || static_cast<std::size_t>(bias.shape(0)) != n) {
      throw value_error("_test_prepared_a: bias must have c.shape[1] elements");
    }
    bias_ptr = static_cast<const T*>(bias.data());
  }
  py::array row_bias;
  const T* row_bias_ptr = nullptr;
  if (!row_bias_in.is_none()) {
    row_bias = c_contiguous(row_bias_in.cast<py::array>());
    if (row_bias.ndim() != 1 || static_cast<std::size_t>(row_bias.shape(0)) != m) {
      throw value_error("_test_prepared_a: row_bias must have c.shape[0] elements");
    }
    row_bias_ptr = static_cast<const T*>(row_bias.data());
  }
  run_native([&] {
    const gemm::PreparedA<T> prepared(operand<T>(a, false), m, k, isa);
    ScratchBuffer scratch = acquire_scratch(prepared.scratch_elements(n) * sizeof(T));
    prepared.multiply(n, operand<T>(b, false), static_cast<T*>(c.mutable_data()), n, static_cast<T>(alpha),
                      static_cast<T>(beta), bias_ptr, scratch.as<T>(), source, row_bias_ptr);
  });
}

// alpha * a @ b + beta * c (+ bias) (+ row_bias) through gemm::PreparedA (a packed once,
// then multiplied on this thread), in a fresh array; b keeps its strides.
py::array test_prepared_a(const py::array& a, const py::array& b, const py::array& c_in, double alpha, double beta,
                          const py::object& bias, const std::string& isa_name_in, const std::string& source,
                          const py::object& row_bias) {
  const Dtype dtype = float_dtype(c_in, "_test_prepared_a", "c");
  same_dtype(dtype, a, "_test_prepared_a", "a", "c");
  same_dtype(dtype, b, "_test_prepared_a", "b", "c");
  if (a.ndim() != 2 || b.ndim() != 2 || c_in.ndim() != 2) throw value_error("_test_prepared_a: a, b, c must be 2-D");
  if (source != "resident" && source != "streamed") {
    throw value_error("_test_prepared_a: source must be 'resident' or 'streamed', got '" + source + "'");
  }
  const gemm::BSource src = source == "resident" ? gemm::BSource::resident : gemm::BSource::streamed;
  const Isa isa = isa_named(isa_name_in);
  py::array c = py::module_::import("numpy").attr("array")(c_in, py::arg("order") = "C");  // a copy
  if (dtype == Dtype::f32) {
    test_prepared_a_typed<float>(a, b, c, alpha, beta, bias, isa, src, row_bias);
  } else {
    test_prepared_a_typed<double>(a, b, c, alpha, beta, bias, isa, src, row_bias);
  }
  return c;
}

}  // namespace

void bind_gemm(py::module_& m) {
  m.def("linear", &linear, py::arg("x"), py::arg("weight"), py::arg("bias"),
        "x @ weight.T + bias for x (*, in), weight (out, in), bias (out,) or None.");
  m.def("linear_backward", &linear_backward, py::arg("grad_output"), py::arg("x"), py::arg("weight"),
        py::arg("output_mask"), "(grad_input, grad_weight, grad_bias) of linear; None where output_mask is False.");
  m.def("_test_gemm", &test_gemm, py::arg("a"), py::arg("b"), py::arg("c"), py::arg("trans_a"), py::arg("trans_b"),
        py::arg("alpha"), py::arg("beta"), py::arg("bias") = py::none(), py::arg("isa"),
        "alpha * op(a) @ op(b) + beta * c (+ bias) with the given kernel family (edge-case tests).");
  m.def("_test_prepared_a", &test_prepared_a, py::arg("a"), py::arg("b"), py::arg("c"), py::arg("alpha"),
        py::arg("beta"), py::arg("bias") = py::none(), py::arg("isa"), py::arg("source") = "resident",
        py::arg("row_bias") = py::none(),
        "alpha * a @ b + beta * c (+ bias[j]) (+ row_bias[i], added last) through a prepared (packed once) a, with "
        "the given kernel family and B source ('resident' or 'streamed'): edge-case tests.");
}

}  // namespace nnkern::bindings
