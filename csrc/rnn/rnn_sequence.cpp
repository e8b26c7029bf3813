// A whole multi-layer sequence for inference (rnn_op.h sequence_forward):
// the layers of rnn_forward.cpp one after another, their workspace and the
// outputs of the layers below the top on scratch memory.
#include <algorithm>
#include <cstddef>

#include "core/workspace.h"
#include "rnn/rnn_op.h"

namespace nnkern::rnn {
namespace {

// Elements rounded up to a multiple of 16 (a 64-byte line of float32, two of float64), so that each
// array starts on a line, as backends/native/rnn.py's _direction lays out the training workspace.
constexpr std::size_t lines(std::size_t elements) { return (elements + 15) / 16 * 16; }

template <class T>
void sequence_forward_typed(const SequenceArgs<T>& s) {
  const std::size_t H = s.hidden, N = s.batch, D = s.dirs, G = H * gate_count(s.mode);
  const std::size_t TN = s.steps * N, NH = N * H;
  const std::size_t per = s.has_biases ? 4 : 2;
  // per direction: the activated gates, the hidden state fed into each step, and the
  // mode's saved states (LSTM: cell state and its tanh; GRU: W_hn h + b_hn)
  const std::size_t states = s.mode == Mode::lstm ? 2 : s.mode == Mode::gru ? 1 : 0;
  const std::size_t per_dir = lines(TN * G) + (1 + states) * lines(TN * H);
  ScratchBuffer work = acquire_scratch(std::max<std::size_t>(1, D * per_dir) * sizeof(T));
  // the outputs of the layers below the top: layer l writes buffer l % 2 and reads the other
  ScratchBuffer between[2];
  for (std::size_t b = 0; b < std::min<std::size_t>(2, s.layers - 1); ++b) {
    between[b] = acquire_scratch(std::max<std::size_t>(1, TN * D * H) * sizeof(T));
  }
  const T* layer_in = s.x;
  std::size_t in_size = s.input;
  for (std::size_t layer = 0; layer < s.layers; ++layer) {
    LayerArgs<T> a;
    a.mode = s.mode;
    a.batch_major = s.batch_major;
    a.steps = s.steps;
    a.batch = N;
    a.input = in_size;
    a.hidden = H;
    a.x = layer_in;
    a.out = layer + 1 == s.layers ? s.out : between[layer % 2].template as<T>();
    for (std::size_t d = 0; d < D; ++d) {
      const std::size_t k = layer * D + d;
      const T* const* w = s.params.data() + k * per;
      T* p = work.as<T>() + d * per_dir;
      DirectionData<T> dd;
      dd.w_ih = w[0];
      dd.w_hh = w[1];
      dd.b_ih = s.has_biases ? w[2] : nullptr;
      dd.b_hh = s.has_biases ? w[3] : nullptr;
      dd.reverse = d == 1;
      dd.h0 = s.h0 + k * NH;
      dd.h_last = s.h_n + k * NH;
      if (s.mode == Mode::lstm) {
        dd.c0 = s.c0 + k * NH;
        dd.c_last = s.c_n + k * NH;
      }
      dd.gates = p;
      p += lines(TN * G);
      dd.hprev = p;
      p += lines(TN * H);
      if (s.mode == Mode::lstm) {
        dd.cprev = p;
        dd.tanh_c = p + lines(TN * H);
      } else if (s.mode == Mode::gru) {
        dd.ghn = p;
      }
      a.dirs.push_back(dd);
    }
    layer_forward(a);
    layer_in = a.out;
    in_size = D * H;
  }
}

}  // namespace

void sequence_forward(const SequenceArgs<float>& args) { sequence_forward_typed(args); }
void sequence_forward(const SequenceArgs<double>& args) { sequence_forward_typed(args); }

}  // namespace nnkern::rnn
