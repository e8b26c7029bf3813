// The backward of one recurrent layer (rnn_op.h layer_backward): per
// direction, in reverse processing order, the time loop on the team
// (rnn_team.h) -- the hidden state's gradient, the fused gate-gradient pass,
// the bias gradients' sums -- then the weight gradients and the gradient of
// the layer input as GEMMs over all steps at once.
#include <algorithm>
#include <cstddef>
#include <memory>
#include <optional>
#include <vector>

#include "core/dispatch.h"
#include "core/thread_pool.h"
#include "core/workspace.h"
#include "gemm/gemm.h"
#include "rnn/rnn_op.h"
#include "rnn/rnn_pointwise.h"
#include "rnn/rnn_team.h"

namespace nnkern::rnn::detail {

using gemm::GemmArgs;
using gemm::MatrixRef;
using gemm::PreparedB;
using gemm::row_major;

namespace {

template <class T>
struct BackwardDirection {
  const LayerArgs<T>& a;
  const DirectionData<T>& dd;
  std::size_t G, H, N, ldo, col;
  std::shared_ptr<const PreparedB<T>> w;  // B = W_hh (k = G, n = H), from the weight cache
  ScratchBuffer state_buf;  // dh, dc, direct: (N, H) each
  T *dh, *dc, *direct;
  ScratchBuffer bias_buf;  // per batch row, the bias gradients' sums over its steps: (N, G) each
  T *acc_ih = nullptr, *acc_hh = nullptr;
  T* d_h;  // hidden-side gate gradients
  PointwiseFns<T> pw = pointwise_fns<T>();

  BackwardDirection(const LayerArgs<T>& args, std::size_t d) : a(args), dd(args.dirs[d]) {
    H = a.hidden;
    N = a.batch;
    G = H * gate_count(a.mode);
    ldo = H * a.dirs.size();
    col = d * H;
    // B(p, j) = W_hh[p, j], packed straight from the weights (rows of B contiguous)
    w = gemm::cached_prepared_b(MatrixRef<T>{dd.w_hh, std::ptrdiff_t(H), 1}, G * H * sizeof(T), G, H, N,
                                kTagRecurrentBackward);
    state_buf = acquire_scratch(std::max<std::size_t>(1, 3 * N * H) * sizeof(T));
    dh = state_buf.as<T>();
    dc = dh + N * H;
    direct = dc + N * H;
    d_h = dd.d_gates_h != nullptr ? dd.d_gates_h : dd.d_gates;
    const std::size_t sums = (dd.grad_b_ih != nullptr ? 1 : 0) + (hh_bias_summed() ? 1 : 0);
    bias_buf = acquire_scratch(std::max<std::size_t>(1, sums * N * G) * sizeof(T));
    if (dd.grad_b_ih != nullptr) acc_ih = bias_buf.as<T>();
    if (hh_bias_summed()) acc_hh = bias_buf.as<T>() + (acc_ih != nullptr ? N * G : 0);
  }

  std::size_t align() const { return w->column_align(); }
  std::size_t scratch_elements() const { return w->scratch_elements(); }
  // processing order of the backward: the forward's, reversed
  std::size_t time_of(std::size_t s) const { return dd.reverse ? s : a.steps - 1 - s; }
  // Row of (step t, batch n) in the (T*N)-row arrays: time-major, or batch-major for batch_first.
  std::size_t row(std::size_t t, std::size_t n) const { return a.batch_major ? n * a.steps + t : t * N + n; }
  // Elements between the rows of consecutive batch entries within one step, for rows `width` wide.
  std::size_t step(std::size_t width) const { return a.batch_major ? a.steps * width : width; }


  // The gradients of the last states; the bias sums start at zero.
  void start() const {
    for (std::size_t i = 0; i < N * H; ++i) {
      direct[i] = dd.grad_h_last != nullptr ? dd.grad_h_last[i] : T(0);
      if (a.mode == Mode::lstm) dc[i] = dd.grad_c_last != nullptr ? dd.grad_c_last[i] : T(0);
    }
    if (acc_ih != nullptr) std::fill(acc_ih, acc_ih + N * G, T(0));
    if (acc_hh != nullptr) std::fill(acc_hh, acc_hh + N * G, T(0));
  }

  // Whether grad_b_hh is summed from its own gate gradients (GRU), not copied from grad_b_ih.
  bool hh_bias_summed() const { return dd.grad_b_hh != nullptr && (d_h != dd.d_gates || dd.grad_b_ih == nullptr); }

  // acc[n*G + g*H + j] += the gate gradients src of step t, batch rows n in [n0, n1), every
  // gate g, units j in [u0, u1): each batch row's bias sums, over its steps in the backward's
  // order, while the step's gradients are in cache (whichever member owns the row or the units).
  void sum_bias(T* acc, const T* src, std::size_t t, std::size_t u0, std::size_t u1, std::size_t n0,
                std::size_t n1) const {
    for (std::size_t n = n0; n < n1; ++n) {
      const T* r = src + row(t, n) * G;
      if (u1 - u0 == H) {
        pw.accumulate(G, acc + n * G, r);
      } else {
        for (std::size_t g = 0; g < G; g += H) pw.accumulate(u1 - u0, acc + n * G + g + u0, r + g + u0);
      }
    }
  }

  // The bias gradients, after the loop: the batch rows' sums added in row order (the same
  // order, so the same bits, whatever the team and its split).
  void bias_grads() const {
    const auto total = [&](const T* acc, T* out) {
      if (N == 0) return std::fill(out, out + G, T(0));
      std::copy(acc, acc + G, out);
      for (std::size_t n = 1; n < N; ++n) pw.accumulate(G, out, acc + n * G);
    };
    if (acc_ih != nullptr) total(acc_ih, dd.grad_b_ih);
    if (acc_hh != nullptr) total(acc_hh, dd.grad_b_hh);
  }

  // Packs the hidden-side gate gradients of the step before s, batch rows [n0, n1) (none before
  // the first); step a.steps is the gradient of the initial states.
  void pack(std::size_t s, T* packed, std::size_t n0 = 0, std::size_t n1 = ~std::size_t{0}) const {
    n1 = std::min(n1, N);
    if (s > 0) w->pack_a(n1 - n0, d_h + row(time_of(s - 1), n0) * G, step(G), packed);
  }

  // Step s for the hidden units [u0, u1) of the batch rows [n0, n1): dh = the output's gradient
  // + what flows back from the later step, then the gate gradients; step a.steps: the initial
  // states' gradients. packed: those rows' gate gradients of the step before (pack()).
  void block(std::size_t s, std::size_t u0, std::size_t u1, const T* packed, std::size_t n0 = 0,
             std::size_t n1 = ~std::size_t{0}) {
    n1 = std::min(n1, N);
    const std::size_t R = n1 - n0;
    if (s == a.steps) {
      for (std::size_t n = n0; n < n1; ++n) {
        for (std::size_t j = u0; j < u1; ++j) {
          dd.grad_h0[n * H + j] = direct[n * H + j];  // gru: the z path; others: 0 after a step
          if (a.mode == Mode::lstm) dd.grad_c0[n * H + j] = dc[n * H + j];
        }
      }
      if (s > 0) w->multiply_packed(R, packed, u0, u1, dd.grad_h0 + n0 * H, H, T(1), T(1), nullptr);
      return;
    }
    const std::size_t t = time_of(s);
    for (std::size_t n = n0; n < n1; ++n) {
      if (a.grad_out != nullptr) {
        pw.add(u1 - u0, direct + n * H + u0, a.grad_out + row(t, n) * ldo + col + u0, dh + n * H + u0);
      } else {
        std::copy(direct + n * H + u0, direct + n * H + u1, dh + n * H + u0);
      }
    }
    if (s > 0) w->multiply_packed(R, packed, u0, u1, dh + n0 * H, H, T(1), T(1), nullptr);
    pointwise(t, u0, u1, n0, n1);
    if (acc_ih != nullptr) sum_bias(acc_ih, dd.d_gates, t, u0, u1, n0, n1);
    if (acc_hh != nullptr) sum_bias(acc_hh, d_h, t, u0, u1, n0, n1);
  }

  // Gate gradients of step t for units [u0, u1) of the batch rows [n0, n1) from dh; updates
  // dc / direct.
  void pointwise(std::size_t t, std::size_t u0, std::size_t u1, std::size_t n0, std::size_t n1) {
    for (std::size_t n = n0; n < n1; ++n) {
      const T* g = dd.gates + row(t, n) * G;
      T* dg = dd.d_gates + row(t, n) * G;
      const T* dhr = dh + n * H;
      const std::size_t U = u1 - u0;
      switch (a.mode) {
        case Mode::lstm:
          pw.lstm_backward(U, dhr + u0, dc + n * H + u0, g + u0, g + H + u0, g + 2 * H + u0, g + 3 * H + u0,
                           dd.tanh_c + row(t, n) * H + u0, dd.cprev + row(t, n) * H + u0, dg + u0, dg + H + u0,
                           dg + 2 * H + u0, dg + 3 * H + u0);
          break;
        case Mode::gru: {
          T* dgh = dd.d_gates_h + row(t, n) * G;
          pw.gru_backward(U, dhr + u0, g + u0, g + H + u0, g + 2 * H + u0, dd.ghn + row(t, n) * H + u0,
                          dd.hprev + row(t, n) * H + u0, dg + u0, dg + H + u0, dg + 2 * H + u0, dgh + u0,
                          dgh + H + u0, dgh + 2 * H + u0, direct + n * H + u0);
          break;
        }
        case Mode::rnn_tanh:
          pw.tanh_backward(U, dhr + u0, a.out + row(t, n) * ldo + col + u0, dg + u0);
          break;
        case Mode::rnn_relu:
          pw.relu_backward(U, dhr + u0, a.out + row(t, n) * ldo + col + u0, dg + u0);
          break;
      }
      if (a.mode != Mode::gru) {
        // nothing bypasses W_hh: the next dh starts from the output gradient alone
        std::fill(direct + n * H + u0, direct + n * H + u1, T(0));
      }
    }
  }
};

// gw (G, K) = d^T (G, M) [a | b] (M, K = K_a + K_b): b may be empty. The [a | b]
// operand is packed once, over the threads, and shared by every thread's rows of
// gw (with a B packed per task, each thread packed all of it); d^T is packed by
// row blocks as it is used.
template <class T>
void weight_grad(std::size_t m, std::size_t g_size, const T* d, const T* a, std::size_t k_a, const T* b,
                 std::size_t k_b, T* gw, std::size_t ldc) {
  const gemm::PreparedB<T> ab(row_major(a, k_a), k_a, row_major(b != nullptr ? b : a, k_b), k_b, m, 0,
                              active_isa());
  GemmArgs<T> g;
  g.m = g_size;
  g.n = k_a + k_b;
  g.k = m;
  g.a = row_major(d, g_size, /*trans=*/true);
  g.c = gw;
  g.ldc = ldc;
  gemm::gemm(g, ab);
}

// Both weight gradients from the same gate gradients d (LSTM, Elman): one GEMM
// [gw_ih | gw_hh] (G, I + H) = d^T [x | h] (M, I + H), so that d^T -- the
// larger operand, packed from a transposed source -- is packed once, not
// twice (L1 backward, one thread: 25.3 -> 22.2 ms for the two products, for
// 0.6 ms of copies in and 0.2 ms out). x and h go into B's panels straight
// from where they are when x's columns fill whole panels, else through one
// copy of [x | h].
template <class T>
void weight_grads_merged(std::size_t m, std::size_t g_size, std::size_t in, std::size_t hid, const T* d, const T* x,
                         const T* h, T* gw_ih, T* gw_hh) {
  const std::size_t k2 = in + hid;
  ScratchBuffer gw_buf = acquire_scratch(std::max<std::size_t>(1, g_size * k2) * sizeof(T));
  T* gw = gw_buf.as<T>();
  if (in % gemm::column_align(active_isa(), T()) == 0) {
    weight_grad(m, g_size, d, x, in, h, hid, gw, k2);
  } else {
    ScratchBuffer xh_buf = acquire_scratch(std::max<std::size_t>(1, m * k2) * sizeof(T));
    T* xh = xh_buf.as<T>();
    constexpr std::size_t kRowsPerTask = 256;
    parallel_for((m + kRowsPerTask - 1) / kRowsPerTask, [&](std::size_t first, std::size_t last) {
      for (std::size_t i = first * kRowsPerTask; i < std::min(m, last * kRowsPerTask); ++i) {
        std::copy(x + i * in, x + (i + 1) * in, xh + i * k2);
        std::copy(h + i * hid, h + (i + 1) * hid, xh + i * k2 + in);
      }
    });
    weight_grad(m, g_size, d, xh, k2, static_cast<const T*>(nullptr), 0, gw, k2);
  }
  for (std::size_t g = 0; g < g_size; ++g) {
    std::copy(gw + g * k2, gw + g * k2 + in, gw_ih + g * in);
    std::copy(gw + g * k2 + in, gw + (g + 1) * k2, gw_hh + g * hid);
  }
}

}  // namespace

template <class T>
void backward_typed(const LayerArgs<T>& a) {
  std::optional<ScopedSerial> serial;
  if (layer_is_small(a)) serial.emplace();
  const std::size_t D = a.dirs.size();
  const std::size_t H = a.hidden, N = a.batch;
  const std::size_t G = H * gate_count(a.mode);
  const std::size_t M = a.steps * N;
  const std::size_t threads = serial ? 1 : static_cast<std::size_t>(get_num_threads());
  const std::size_t max_members = team_members(a, threads);
  std::vector<std::unique_ptr<BackwardDirection<T>>> dirs;
  for (std::size_t d = 0; d < D; ++d) {
    dirs.push_back(std::make_unique<BackwardDirection<T>>(a, d));
    dirs[d]->start();
  }
  MemberScratch<T> scratch(max_members * D, dirs[0]->scratch_elements());
  // One direction with enough batch rows: every member runs all steps of its own rows (rows are
  // independent sequences backwards too), with no wait between steps; otherwise members split
  // each step's hidden units (two directions: a direction each).
  if (max_members > 1 && D == 1 && N >= kMinRowsPerMember * max_members) {
    StepSchedule::NoSideWork none;
    run_batch_team(dirs, a.steps + 1, max_members, scratch, none);
  } else {
    run_team(dirs, a.steps + 1, max_members, scratch);
  }
  // after the loop: biases, weights and the layer input, over all steps at once
  for (std::size_t d = 0; d < D; ++d) {
    const DirectionData<T>& dd = a.dirs[d];
    dirs[d]->bias_grads();
    const T* d_h = dd.d_gates_h != nullptr ? dd.d_gates_h : dd.d_gates;
    if (d_h == dd.d_gates) {
      weight_grads_merged(M, G, a.input, H, dd.d_gates, a.x, dd.hprev, dd.grad_w_ih, dd.grad_w_hh);
    } else {
      weight_grad(M, G, dd.d_gates, a.x, a.input, static_cast<const T*>(nullptr), 0, dd.grad_w_ih, a.input);
      weight_grad(M, G, d_h, dd.hprev, H, static_cast<const T*>(nullptr), 0, dd.grad_w_hh, H);
    }
    if (dd.grad_b_hh != nullptr && !dirs[d]->hh_bias_summed()) {
      std::copy(dd.grad_b_ih, dd.grad_b_ih + G, dd.grad_b_hh);  // the same gate gradients
    }
    if (a.grad_x != nullptr) {
      GemmArgs<T> g;  // grad_x (M, I) (+)= d_gates (M, G) W_ih (G, I)
      g.m = M;
      g.n = a.input;
      g.k = G;
      g.a = row_major(dd.d_gates, G);
      g.b = row_major(dd.w_ih, a.input);
      g.beta = d == 0 ? T(0) : T(1);
      g.c = a.grad_x;
      g.ldc = a.input;
      gemm::gemm(g);
    }
  }
}

template void backward_typed<float>(const LayerArgs<float>& a);
template void backward_typed<double>(const LayerArgs<double>& a);

}  // namespace nnkern::rnn::detail
