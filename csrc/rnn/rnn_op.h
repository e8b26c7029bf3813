// Recurrent layers: one layer of an LSTM, GRU or Elman RNN over a whole
// sequence, every direction, forward and backward through time. The cells
// are sequences of length one (rnn.py in the Python backend does that).
//
// Semantics are PyTorch's (torch.nn.LSTM / GRU / RNN): weights in PyTorch's
// layout, LSTM gates i, f, g, o; GRU gates r, z, n with r applied to
// (W_hn h + b_hn). Arguments arrive validated and C-contiguous, in one dtype;
// the caller (Python) allocates every output and the workspace, so nothing
// is allocated inside the time loop except nothing at all.
//
// Forward, per direction: the input projection of every step is one GEMM
// into `gates` (T, N, G), the biases folded in (b_ih + b_hh; GRU: b_ih only);
// then per step one multiply by the recurrent weights -- packed once per
// call (gemm::PreparedB) -- and one fused pass over the step's gates that
// applies the nonlinearities, updates the states and stores what the
// backward needs. Work split: each step of each direction is cut into blocks
// of hidden units in whole register-tile columns, a block computing every
// gate of its units, so the fused pass needs no other block's data; team
// members claim blocks (their own share of every step first -- with two
// directions on two threads, one direction each -- then any block still
// unclaimed), and a step starts once every block of the step before is done.
//
// Backward, per direction, in reverse processing order, in the same blocks:
// the gradient of the block's hidden units (grad of the output + the gate
// gradients of the later step times W_hh, columns of its units), then the
// fused gate-gradient pass for its units, then its columns of the bias
// gradients summed (while the step's gate gradients are in cache); after the
// loop, the weight gradients are GEMMs over all steps at once, and the
// gradient of the layer input is one GEMM per direction.
//
// Determinism: every element is computed by the same sequence of operations
// whatever the team size, so results are bit-identical for any thread count.
#pragma once

#include <cstddef>
#include <vector>

namespace nnkern::rnn {

enum class Mode { lstm, gru, rnn_tanh, rnn_relu };

std::size_t gate_count(Mode mode);

template <class T>
struct DirectionData {
  // parameters (G = gate_count * H)
  const T* w_ih = nullptr;  // (G, I)
  const T* w_hh = nullptr;  // (G, H)
  const T* b_ih = nullptr;  // (G) or null
  const T* b_hh = nullptr;  // (G) or null
  bool reverse = false;
  // forward
  const T* h0 = nullptr;  // (N, H)
  const T* c0 = nullptr;  // lstm: (N, H)
  T* h_last = nullptr;    // (N, H)
  T* c_last = nullptr;    // lstm: (N, H)
  // workspace written by the forward, read by the backward
  T* gates = nullptr;   // (T, N, G): activated gates (Elman: pre-activations, not read back)
  T* hprev = nullptr;   // (T, N, H): the hidden state fed into each step
  T* cprev = nullptr;   // lstm: (T, N, H) the cell state fed into each step
  T* tanh_c = nullptr;  // lstm: (T, N, H) tanh of the cell state each step produced
  T* ghn = nullptr;     // gru: (T, N, H) W_hn h + b_hn of each step
  // backward
  const T* grad_h_last = nullptr;  // (N, H) or null (zeros)
  const T* grad_c_last = nullptr;  // lstm: (N, H) or null (zeros)
  T* grad_h0 = nullptr;            // (N, H)
  T* grad_c0 = nullptr;            // lstm: (N, H)
  T* grad_w_ih = nullptr;          // (G, I)
  T* grad_w_hh = nullptr;          // (G, H)
  T* grad_b_ih = nullptr;          // (G) or null
  T* grad_b_hh = nullptr;          // (G) or null
  T* d_gates = nullptr;            // scratch (T, N, G): input-side pre-activation gradients
  T* d_gates_h = nullptr;          // gru scratch (T, N, G): hidden-side ones (others: null, = d_gates)
};

template <class T>
struct LayerArgs {
  Mode mode = Mode::lstm;
  std::size_t steps = 0, batch = 0, input = 0, hidden = 0;
  // The (T*N)-row arrays (x, out, grad_out, grad_x and the per-step workspace) are
  // time-major, (T, N, *), or with batch_major (batch_first) (N, T, *): no transposing
  // copy of the input. The states (h0, h_last, ...) are (N, H) either way.
  bool batch_major = false;
  const T* x = nullptr;     // (T, N, I)
  T* out = nullptr;         // (T, N, D*H): direction d writes columns [d*H, (d+1)*H)
  const T* grad_out = nullptr;  // backward: (T, N, D*H) or null (zeros)
  T* grad_x = nullptr;          // backward: (T, N, I) or null (not wanted)
  std::vector<DirectionData<T>> dirs;  // 1 or 2
};

// A whole sequence for inference: every layer and direction, no dropout, nothing saved for a
// backward (each layer's workspace and the outputs of the layers below the top live on scratch
// memory). The same bits as layer_forward layer by layer.
template <class T>
struct SequenceArgs {
  Mode mode = Mode::lstm;
  bool batch_major = false;  // (N, T, *) arrays, as LayerArgs
  bool has_biases = true;
  std::size_t steps = 0, batch = 0, input = 0, hidden = 0, layers = 1, dirs = 1;
  const T* x = nullptr;              // (T, N, I)
  std::vector<const T*> params;      // PyTorch's flat order: per layer and direction w_ih, w_hh[, b_ih, b_hh]
  const T* h0 = nullptr;             // (layers * dirs, N, H)
  const T* c0 = nullptr;             // lstm: (layers * dirs, N, H)
  T* out = nullptr;                  // (T, N, dirs * H)
  T* h_n = nullptr;                  // (layers * dirs, N, H)
  T* c_n = nullptr;                  // lstm: (layers * dirs, N, H)
};

void sequence_forward(const SequenceArgs<float>& args);
void sequence_forward(const SequenceArgs<double>& args);

void layer_forward(const LayerArgs<float>& args);
void layer_forward(const LayerArgs<double>& args);
void layer_backward(const LayerArgs<float>& args);
void layer_backward(const LayerArgs<double>& args);

}  // namespace nnkern::rnn
