// Recurrent layers (rnn_op.h): the public entry points, gate_count and the
// elementwise passes of the kernel family in use; the forward of a layer is
// in rnn_forward.cpp, its backward in rnn_backward.cpp, what they share in
// rnn_team.h, and a whole sequence for inference in rnn_sequence.cpp.
#include "rnn/rnn_op.h"

#include <cstddef>

#include "core/dispatch.h"
#include "rnn/rnn_pointwise.h"
#include "rnn/rnn_team.h"

namespace nnkern::rnn {
namespace detail {

template <>
PointwiseFns<float> pointwise_fns<float>() {
  switch (active_isa()) {
#if NNKERN_X86_KERNELS
    case Isa::avx512: return f32_rnn_pointwise_avx512();
    case Isa::avx2: return f32_rnn_pointwise_avx2();
#endif
    default: return f32_rnn_pointwise_scalar();
  }
}

template <>
PointwiseFns<double> pointwise_fns<double>() {
  switch (active_isa()) {
#if NNKERN_X86_KERNELS
    case Isa::avx512: return f64_rnn_pointwise_avx512();
    case Isa::avx2: return f64_rnn_pointwise_avx2();
#endif
    default: return f64_rnn_pointwise_scalar();
  }
}

}  // namespace detail

std::size_t gate_count(Mode mode) {
  switch (mode) {
    case Mode::lstm: return 4;
    case Mode::gru: return 3;
    default: return 1;
  }
}

void layer_forward(const LayerArgs<float>& args) { detail::forward_typed(args); }
void layer_forward(const LayerArgs<double>& args) { detail::forward_typed(args); }
void layer_backward(const LayerArgs<float>& args) { detail::backward_typed(args); }
void layer_backward(const LayerArgs<double>& args) { detail::backward_typed(args); }

}  // namespace nnkern::rnn
