// Recurrent layers (csrc/rnn/): one layer of an LSTM, GRU or Elman RNN over a
// whole sequence, every direction, forward and backward through time. The
// Python side (backends/native/rnn.py) allocates the outputs and the
// workspace and passes them in, one dict of arrays per direction.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "bindings/arrays.h"
#include "bindings/families.h"
#include "core/errors.h"
#include "rnn/rnn_op.h"

namespace nnkern::bindings {
namespace {

rnn::Mode mode_of(const std::string& mode) {
  if (mode == "lstm") return rnn::Mode::lstm;
  if (mode == "gru") return rnn::Mode::gru;
  if (mode == "rnn_tanh") return rnn::Mode::rnn_tanh;
  if (mode == "rnn_relu") return rnn::Mode::rnn_relu;
  throw value_error("rnn: mode must be lstm, gru, rnn_tanh or rnn_relu, got '" + mode + "'");
}

// The data of an optional array argument: None gives null. The array must be
// C-contiguous and of the layer's dtype (the Python layer guarantees both;
// this only keeps a wrong call from reading the wrong memory).
template <class T>
T* data_of(const py::object& obj, const char* name, bool writable) {
  if (obj.is_none()) return nullptr;
  const py::array a = obj.cast<py::array>();
  if (!py::isinstance<py::array_t<T>>(a) || !(a.flags() & py::array::c_style)) {
    throw type_error(std::string("rnn: ") + name + " must be a C-contiguous array of the input's dtype");
  }
  if (writable && !a.writeable()) throw value_error(std::string("rnn: ") + name + " must be writable");
  return static_cast<T*>(const_cast<void*>(a.data()));
}

template <class T>
T* field(const py::dict& d, const char* name, bool writable) {
  return d.contains(name) ? data_of<T>(d[name], name, writable) : nullptr;
}

template <class T>
rnn::LayerArgs<T> layer_args(const std::string& mode, bool batch_first, const py::array& x, const py::array& out,
                             const py::list& dirs) {
  rnn::LayerArgs<T> a;
  a.mode = mode_of(mode);
  if (x.ndim() != 3 || out.ndim() != 3 || dirs.empty() || dirs.size() > 2 ||
      out.shape(2) % static_cast<py::ssize_t>(dirs.size()) != 0) {
    throw value_error("rnn: x and out must be (T, N, *) or (N, T, *) with 1 or 2 directions");
  }
  a.batch_major = batch_first;
  a.steps = static_cast<std::size_t>(x.shape(batch_first ? 1 : 0));
  a.batch = static_cast<std::size_t>(x.shape(batch_first ? 0 : 1));
  a.input = static_cast<std::size_t>(x.shape(2));
  a.hidden = static_cast<std::size_t>(out.shape(2)) / dirs.size();
  a.x = data_of<T>(x, "x", false);
  a.out = data_of<T>(out, "out", true);
  for (const auto& item : dirs) {
    const py::dict d = item.cast<py::dict>();
    rnn::DirectionData<T> dd;
    dd.w_ih = field<T>(d, "w_ih", false);
    dd.w_hh = field<T>(d, "w_hh", false);
    dd.b_ih = field<T>(d, "b_ih", false);
    dd.b_hh = field<T>(d, "b_hh", false);
    dd.reverse = d.contains("reverse") && d["reverse"].cast<bool>();
    dd.h0 = field<T>(d, "h0", false);
    dd.c0 = field<T>(d, "c0", false);
    dd.h_last = field<T>(d, "h_last", true);
    dd.c_last = field<T>(d, "c_last", true);
    dd.gates = field<T>(d, "gates", true);
    dd.hprev = field<T>(d, "hprev", true);
    dd.cprev = field<T>(d, "cprev", true);
    dd.tanh_c = field<T>(d, "tanh_c", true);
    dd.ghn = field<T>(d, "ghn", true);
    dd.grad_h_last = field<T>(d, "grad_h_last", false);
    dd.grad_c_last = field<T>(d, "grad_c_last", false);
    dd.grad_h0 = field<T>(d, "grad_h0", true);
    dd.grad_c0 = field<T>(d, "grad_c0", true);
    dd.grad_w_ih = field<T>(d, "grad_w_ih", true);
    dd.grad_w_hh = field<T>(d, "grad_w_hh", true);
    dd.grad_b_ih = field<T>(d, "grad_b_ih", true);
    dd.grad_b_hh = field<T>(d, "grad_b_hh", true);
    dd.d_gates = field<T>(d, "d_gates", true);
    dd.d_gates_h = field<T>(d, "d_gates_h", true);
    a.dirs.push_back(dd);
  }
  return a;
}

void rnn_layer_forward(const std::string& mode, bool batch_first, const py::array& x, const py::array& out,
                       const py::list& dirs) {
  if (float_dtype(x, "rnn", "x") == Dtype::f32) {
    const auto a = layer_args<float>(mode, batch_first, x, out, dirs);
    run_native([&] { rnn::layer_forward(a); });
  } else {
    const auto a = layer_args<double>(mode, batch_first, x, out, dirs);
    run_native([&] { rnn::layer_forward(a); });
  }
}

void rnn_layer_backward(const std::string& mode, bool batch_first, const py::array& x, const py::array& out,
                        const py::object& grad_out, const py::object& grad_x, const py::list& dirs) {
  if (float_dtype(x, "rnn", "x") == Dtype::f32) {
    auto a = layer_args<float>(mode, batch_first, x, out, dirs);
    a.grad_out = data_of<float>(grad_out, "grad_out", false);
    a.grad_x = data_of<float>(grad_x, "grad_x", true);
    run_native([&] { rnn::layer_backward(a); });
  } else {
    auto a = layer_args<double>(mode, batch_first, x, out, dirs);
    a.grad_out = data_of<double>(grad_out, "grad_out", false);
    a.grad_x = data_of<double>(grad_x, "grad_x", true);
    run_native([&] { rnn::layer_backward(a); });
  }
}

// A whole sequence for inference: (out, h_n, c_n or None). Arguments as validated by the functional
// layer (functional/recurrent.py); arrays not yet C-contiguous in the input's dtype are converted.
template <class T>
py::tuple sequence_forward(rnn::Mode mode, bool batch_first, const py::array& x_in, const py::array& h0_in,
                           const py::object& c0_in, const py::list& params_in, std::size_t layers, bool bidirectional,
                           bool has_biases) {
  const std::size_t dirs = bidirectional ? 2 : 1, per = has_biases ? 4 : 2;
  const auto x = c_contiguous_as<T>(x_in, "rnn", "x");
  const auto h0 = c_contiguous_as<T>(h0_in, "rnn", "h0");
  if (x.ndim() != 3 || h0.ndim() != 3 || layers == 0 || params_in.size() != layers * dirs * per ||
      h0.shape(0) != static_cast<py::ssize_t>(layers * dirs)) {
    throw value_error("rnn: x must be 3-D, h0 (layers * dirs, N, hidden), params layers * dirs * (4 or 2) arrays");
  }
  rnn::SequenceArgs<T> s;
  s.mode = mode;
  s.batch_major = batch_first;
  s.has_biases = has_biases;
  s.steps = static_cast<std::size_t>(x.shape(batch_first ? 1 : 0));
  s.batch = static_cast<std::size_t>(x.shape(batch_first ? 0 : 1));
  s.input = static_cast<std::size_t>(x.shape(2));
  s.hidden = static_cast<std::size_t>(h0.shape(2));
  s.layers = layers;
  s.dirs = dirs;
  std::vector<py::array> keep;  // the converted parameters, alive until the call returns
  keep.reserve(params_in.size() + 1);
  for (const auto& p : params_in) {
    keep.push_back(c_contiguous_as<T>(p.cast<py::array>(), "rnn", "params"));
    s.params.push_back(static_cast<const T*>(keep.back().data()));
  }
  const Dtype dt = std::is_same_v<T, float> ? Dtype::f32 : Dtype::f64;
  const auto P = [](std::size_t v) { return static_cast<py::ssize_t>(v); };
  py::array out = empty_shaped(dt, {x.shape(0), x.shape(1), P(dirs * s.hidden)});
  py::array h_n = empty_shaped(dt, {P(layers * dirs), P(s.batch), P(s.hidden)});
  py::object c_n = py::none();
  s.x = x.data();
  s.h0 = h0.data();
  s.out = static_cast<T*>(out.mutable_data());
  s.h_n = static_cast<T*>(h_n.mutable_data());
  if (mode == rnn::Mode::lstm) {
    keep.push_back(c_contiguous_as<T>(c0_in.cast<py::array>(), "rnn", "c0"));
    s.c0 = static_cast<const T*>(keep.back().data());
    py::array c = empty_shaped(dt, {P(layers * dirs), P(s.batch), P(s.hidden)});
    s.c_n = static_cast<T*>(c.mutable_data());
    c_n = std::move(c);
  }
  run_native([&] { rnn::sequence_forward(s); });
  return py::make_tuple(out, h_n, c_n);
}

py::tuple rnn_seq_forward(const std::string& mode, bool batch_first, const py::array& x, const py::array& h0,
                          const py::object& c0, const py::list& params, std::size_t num_layers, bool bidirectional,
                          bool has_biases) {
  const rnn::Mode m = mode_of(mode);
  if (float_dtype(x, "rnn", "x") == Dtype::f32) {
    return sequence_forward<float>(m, batch_first, x, h0, c0, params, num_layers, bidirectional, has_biases);
  }
  return sequence_forward<double>(m, batch_first, x, h0, c0, params, num_layers, bidirectional, has_biases);
}

}  // namespace

void bind_rnn(pybind11::module_& m) {
  m.def("rnn_layer_forward", &rnn_layer_forward, py::arg("mode"), py::arg("batch_first"), py::arg("x"), py::arg("out"),
        py::arg("dirs"),
        "One recurrent layer over a sequence, every direction (backends/native/rnn.py builds the arguments).");
  m.def("rnn_layer_backward", &rnn_layer_backward, py::arg("mode"), py::arg("batch_first"), py::arg("x"),
        py::arg("out"),
        py::arg("grad_out"), py::arg("grad_x"), py::arg("dirs"),
        "Backward through time of rnn_layer_forward, from its saved workspace.");
  m.def("rnn_seq_forward", &rnn_seq_forward, py::arg("mode"), py::arg("batch_first"), py::arg("x"), py::arg("h0"),
        py::arg("c0"), py::arg("params"), py::arg("num_layers"), py::arg("bidirectional"), py::arg("has_biases"),
        "A whole sequence for inference (no dropout, no workspace): (out, h_n, c_n or None).");
}

}  // namespace nnkern::bindings
