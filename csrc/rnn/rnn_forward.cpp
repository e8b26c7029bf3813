// The forward of one recurrent layer (rnn_op.h layer_forward): per direction,
// the input projection, then the time loop on the team (rnn_team.h), each
// step one multiply by the packed recurrent weights and the fused pass that
// applies the nonlinearities and updates the states; a team on one direction
// projects the input in chunks beside the steps.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <exception>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "core/dispatch.h"
#include "core/thread_pool.h"
#include "core/workspace.h"
#include "gemm/gemm.h"
#include "gemm/gemm_ukernel.h"
#include "rnn/rnn_op.h"
#include "rnn/rnn_pointwise.h"
#include "rnn/rnn_team.h"
#include "vmath/vactivation.h"

namespace nnkern::rnn::detail {

using gemm::GemmArgs;
using gemm::MatrixRef;
using gemm::PreparedB;
using gemm::row_major;

namespace {

// Rows of one chunk of the input projection when a team computes it beside the time loop: a
// multiple of every kernel family's tile height (14, 6, 4 rows), ~0.5 ms of work at LSTM 256/256
// (L1, 2 threads: 168 rows measured ~2% faster than 84 or 112, within noise of 336).
constexpr std::size_t kProjectionChunkRows = 168;

// ------------------------------------------------------------------ activations over spans

struct F32Activations {
  vmath::F32VunaryFn sigmoid, tanh;
};

const PerIsa<F32Activations> kF32Act = {
    {vmath::f32_vsigmoid_scalar, vmath::f32_vtanh_scalar},
    {NNKERN_X86_ONLY(vmath::f32_vsigmoid_avx2), NNKERN_X86_ONLY(vmath::f32_vtanh_avx2)},
    {NNKERN_X86_ONLY(vmath::f32_vsigmoid_avx512), NNKERN_X86_ONLY(vmath::f32_vtanh_avx512)},
};

// In-place sigmoid / tanh of n contiguous elements: the vector kernels for
// float32, the C library (as the NumPy reference: sigmoid = tanh form) for float64.
struct Act {
  F32Activations f32 = kF32Act.active();
  void sigmoid(std::size_t n, float* x) const { f32.sigmoid(n, x, x); }
  void tanh(std::size_t n, float* x) const { f32.tanh(n, x, x); }
  void tanh(std::size_t n, const float* x, float* y) const { f32.tanh(n, x, y); }
  void sigmoid(std::size_t n, double* x) const {
    for (std::size_t i = 0; i < n; ++i) x[i] = 0.5 * std::tanh(0.5 * x[i]) + 0.5;
  }
  void tanh(std::size_t n, double* x) const {
    for (std::size_t i = 0; i < n; ++i) x[i] = std::tanh(x[i]);
  }
  void tanh(std::size_t n, const double* x, double* y) const {
    for (std::size_t i = 0; i < n; ++i) y[i] = std::tanh(x[i]);
  }
};

// ------------------------------------------------------------------ forward

template <class T>
struct ForwardDirection {
  const LayerArgs<T>& a;
  const DirectionData<T>& dd;
  std::size_t G, H, N, ldo, col;  // col: this direction's first column in out
  // W_hh^T, one per gate block (k = H, n = H), or whole (k = H, n = G) for a
  // team of one; from the weight cache (packed once while W_hh is unchanged)
  std::vector<std::shared_ptr<const PreparedB<T>>> w;
  std::shared_ptr<const PreparedB<T>> w_all;
  std::shared_ptr<const PreparedB<T>> w_ih;     // W_ih^T for the input projection (null: dot products)
  const T* proj_bias = nullptr;
  T* gh = nullptr;                               // gru: (N, G) hidden projection of the step
  // gru: W_hr h and W_hz h accumulate straight into the projected gates (b_hr and b_hz ride in
  // the projection's bias), only W_hn h + b_hn goes to gh; needs 2H on a panel boundary. A
  // property of the shape alone, so every thread count takes the same form (the same bits).
  bool fold_rz = false;
  ScratchBuffer gh_buf;
  Act act;
  PointwiseFns<T> pw = pointwise_fns<T>();

  // whole: one operand over every gate (a team of one, or members that split the batch)
  ForwardDirection(const LayerArgs<T>& args, std::size_t d, bool whole) : a(args), dd(args.dirs[d]) {
    H = a.hidden;
    N = a.batch;
    G = H * gate_count(a.mode);
    ldo = H * a.dirs.size();
    col = d * H;
    if (whole) {
      // one thread owns every unit: one operand over all gates (more panels per multiply)
      w_all = gemm::cached_prepared_b(MatrixRef<T>{dd.w_hh, 1, std::ptrdiff_t(H)}, G * H * sizeof(T), H, G, N,
                                      kTagRecurrent);
    } else {
      for (std::size_t g = 0; g < G / H; ++g) {
        // B = (block g of W_hh)^T: B(p, j) = W_hh[g*H + j, p]
        w.push_back(gemm::cached_prepared_b(MatrixRef<T>{dd.w_hh + g * H * H, 1, std::ptrdiff_t(H)},
                                            H * H * sizeof(T), H, H, N, kTagRecurrent));
      }
    }
    if (a.mode == Mode::gru) {
      gh_buf = acquire_scratch(std::max<std::size_t>(1, N * G) * sizeof(T));
      gh = gh_buf.as<T>();
      fold_rz = (2 * H) % align() == 0;
    }
  }

  const PreparedB<T>& any_w() const { return w_all ? *w_all : *w[0]; }
  std::size_t align() const { return any_w().column_align(); }
  std::size_t scratch_elements() const { return any_w().scratch_elements(); }

  // The input projection's bias (b_ih + b_hh for the LSTM and Elman cells; for the GRU b_ih,
  // plus b_hr and b_hz when they are folded in) and its operand; bias_buf: G elements that live
  // as long as this direction's projection.
  void prepare_projection(T* bias_buf) {
    if (a.mode == Mode::gru && (!fold_rz || dd.b_hh == nullptr)) {
      proj_bias = dd.b_ih;
    } else if (dd.b_ih != nullptr || dd.b_hh != nullptr) {
      const std::size_t hh_end = a.mode == Mode::gru ? 2 * H : G;  // the GRU's b_hn stays with W_hn h
      for (std::size_t g = 0; g < G; ++g) {
        bias_buf[g] = (dd.b_ih != nullptr ? dd.b_ih[g] : T(0)) + (dd.b_hh != nullptr && g < hh_end ? dd.b_hh[g] : T(0));
      }
      proj_bias = bias_buf;
    }
    if (a.steps * N > gemm::dot_rows(T())) {
      w_ih = gemm::cached_prepared_b(row_major(dd.w_ih, a.input, /*trans=*/true), G * a.input * sizeof(T), a.input,
                                     G, 1, kTagProjection);
    }
  }

  // The input projection of the rows [r0, r1) of the (T*N)-row arrays: gates = x W_ih^T + bias.
  // Every element is the same FMA chain whatever the rows' range (the packed path; callers keep
  // each range above dot_rows() rows unless it is every row).
  void project_rows(std::size_t r0, std::size_t r1) const {
    GemmArgs<T> g;
    g.m = r1 - r0;
    g.n = G;
    g.k = a.input;
    g.a = row_major(a.x + r0 * a.input, a.input);
    g.b = row_major(dd.w_ih, a.input, /*trans=*/true);
    g.c = dd.gates + r0 * G;
    g.ldc = G;
    g.bias = proj_bias;
    if (w_ih == nullptr) {
      gemm::gemm(g);  // dot products on W_ih's rows, nothing packed
    } else {
      gemm::gemm(g, *w_ih);
    }
  }

  // The input projection of every step.
  void project_input() const { project_rows(0, a.steps * N); }

  std::size_t time_of(std::size_t s) const { return dd.reverse ? a.steps - 1 - s : s; }
  // Row of (step t, batch n) in the (T*N)-row arrays: time-major, or batch-major for batch_first.
  std::size_t row(std::size_t t, std::size_t n) const { return a.batch_major ? n * a.steps + t : t * N + n; }
  // Elements between the rows of consecutive batch entries within one step, for rows `width` wide.
  std::size_t step(std::size_t width) const { return a.batch_major ? a.steps * width : width; }


  // The states fed into the first step.
  void start() const {
    for (std::size_t n = 0; n < N; ++n) {
      std::copy(dd.h0 + n * H, dd.h0 + (n + 1) * H, dd.hprev + row(time_of(0), n) * H);
      if (a.mode == Mode::lstm) std::copy(dd.c0 + n * H, dd.c0 + (n + 1) * H, dd.cprev + row(time_of(0), n) * H);
    }
  }

  // Packs the hidden state fed into step s, batch rows [n0, n1) (one packed h for every gate block).
  void pack(std::size_t s, T* packed, std::size_t n0 = 0, std::size_t n1 = ~std::size_t{0}) const {
    n1 = std::min(n1, N);
    any_w().pack_a(n1 - n0, dd.hprev + row(time_of(s), n0) * H, step(H), packed);
  }

  // Step s for the hidden units [u0, u1) of the batch rows [n0, n1): their columns of every
  // gate, then the fused pass; packed: those rows' hidden state (pack()).
  void block(std::size_t s, std::size_t u0, std::size_t u1, const T* packed, std::size_t n0 = 0,
             std::size_t n1 = ~std::size_t{0}) {
    n1 = std::min(n1, N);
    const std::size_t U = u1 - u0;
    const std::size_t R = n1 - n0;
    const std::size_t t = time_of(s);
    const bool last = s + 1 == a.steps;
    T* gates = dd.gates + row(t, n0) * G;
    const T* hp = dd.hprev + row(t, n0) * H;
    T* h_next = last ? dd.h_last + n0 * H : dd.hprev + row(time_of(s + 1), n0) * H;
    const std::size_t ld_next = last ? H : step(H);
    T* out = a.out + row(t, n0) * ldo + col;
    T* ghb = gh != nullptr ? gh + n0 * G : nullptr;
    if (w_all && u0 == 0 && u1 == H) {
      // In runs of the small-batch kernel's width, ascending on even steps and descending on
      // odd ones: at batch 1-2 W_hh^T is streamed whole every step (64 KB for L2's 64 x 256,
      // more than L1), and the runs the step before touched last are still in L1 when this
      // step starts with them. The runs' order does not change any element's bits.
      const std::size_t run = R <= gemm::kWideMaxRows ? gemm::kWidePanels * w_all->column_align() : G;
      const std::size_t runs = (G + run - 1) / run;
      // the columns below `into_gates` accumulate into the gates (all of them but the GRU's)
      const std::size_t into_gates = a.mode != Mode::gru ? G : fold_rz ? 2 * H : 0;
      for (std::size_t r = 0; r < runs; ++r) {
        const std::size_t j0 = (s % 2 == 0 ? r : runs - 1 - r) * run, j1 = std::min(G, j0 + run);
        if (j0 < into_gates) {
          w_all->multiply_packed(R, packed, j0, std::min(j1, into_gates), gates, step(G), T(1), T(1), nullptr);
        }
        if (j1 > into_gates) {
          const std::size_t from = std::max(j0, into_gates);
          w_all->multiply_packed(R, packed, from, j1, ghb, G, T(1), T(0), dd.b_hh);
        }
      }
    } else if (a.mode == Mode::gru) {
      for (std::size_t g = 0; g < 3; ++g) {
        if (fold_rz && g < 2) {
          w[g]->multiply_packed(R, packed, u0, u1, gates + g * H, step(G), T(1), T(1), nullptr);
        } else {
          w[g]->multiply_packed(R, packed, u0, u1, ghb + g * H, G, T(1), T(0),
                                dd.b_hh != nullptr ? dd.b_hh + g * H : nullptr);
        }
      }
    } else {
      for (std::size_t g = 0; g < G / H; ++g) {
        w[g]->multiply_packed(R, packed, u0, u1, gates + g * H, step(G), T(1), T(1), nullptr);
      }
    }
    if (!last && R <= gemm::kWideMaxRows) {
      // the next step's projected gates (written by the projection helper on the other core, or
      // long ago): fetched while this step's fused pass runs
      const T* next = dd.gates + row(time_of(s + 1), n0) * G + u0;
      for (std::size_t n = 0; n < R; ++n) {
        for (std::size_t g = 0; g < G / H; ++g) {
          const char* p = reinterpret_cast<const char*>(next + n * step(G) + g * H);
          for (std::size_t b = 0; b < U * sizeof(T); b += 64) __builtin_prefetch(p + b);
        }
      }
    }
    for (std::size_t n = 0; n < R; ++n) {
      T* gr = gates + n * step(G);
      T* ho = out + n * step(ldo);
      T* hn = h_next + n * ld_next;
      switch (a.mode) {
        case Mode::lstm: {
          T* c_next = last ? dd.c_last + (n0 + n) * H : dd.cprev + row(time_of(s + 1), n0 + n) * H;
          const T* cp = dd.cprev + row(t, n0 + n) * H;
          T* tc = dd.tanh_c + row(t, n0 + n) * H;
          if (U == H) {
            act.sigmoid(2 * H, gr);  // i and f at once
          } else {
            act.sigmoid(U, gr + u0);
            act.sigmoid(U, gr + H + u0);
          }
          act.tanh(U, gr + 2 * H + u0);
          act.sigmoid(U, gr + 3 * H + u0);
          pw.lstm_state(U, gr + u0, gr + H + u0, gr + 2 * H + u0, cp + u0, c_next + u0);
          act.tanh(U, c_next + u0, tc + u0);
          pw.lstm_out(U, gr + 3 * H + u0, tc + u0, ho + u0, hn + u0);
          break;
        }
        case Mode::gru: {
          const T* ghr = ghb + n * G;
          T* ghn = dd.ghn + row(t, n0 + n) * H;
          if (!fold_rz) pw.gru_pre(U, gr + u0, gr + H + u0, ghr + u0, ghr + H + u0);
          act.sigmoid(U, gr + u0);
          act.sigmoid(U, gr + H + u0);
          pw.gru_n(U, gr + 2 * H + u0, gr + u0, ghr + 2 * H + u0, ghn + u0);
          act.tanh(U, gr + 2 * H + u0);
          pw.gru_out(U, gr + 2 * H + u0, gr + H + u0, hp + n * step(H) + u0, ho + u0, hn + u0);
          break;
        }
        case Mode::rnn_tanh:
          act.tanh(U, gr + u0, hn + u0);
          std::copy(hn + u0, hn + u1, ho + u0);
          break;
        case Mode::rnn_relu:
          pw.relu_out(U, gr + u0, ho + u0, hn + u0);
          break;
      }
    }
  }
};

// The input projection of a time-major layer as chunks of rows, computed by the team's members
// while they cannot start a step (side work of the step schedule), in each direction's
// processing order; a step starts once the chunks holding its rows are done.
template <class T>
struct ProjectionChunks {
  const std::vector<std::unique_ptr<ForwardDirection<T>>>& dirs;
  std::size_t D, M, N, per_dir, total;
  std::size_t rows;  // per chunk; the last chunk of a direction takes the rest (so every chunk has >= rows)
  std::unique_ptr<std::atomic<unsigned char>[]> finished;
  std::atomic_flag failed = ATOMIC_FLAG_INIT;
  std::exception_ptr error;  // the first chunk's exception, written by the member that set `failed`
  alignas(64) std::atomic<std::size_t> next{0};

  ProjectionChunks(const std::vector<std::unique_ptr<ForwardDirection<T>>>& dirs_, std::size_t rows_per_chunk)
      : dirs(dirs_), D(dirs_.size()), M(dirs_[0]->a.steps * dirs_[0]->N), N(dirs_[0]->N) {
    rows = std::min(M, rows_per_chunk);
    per_dir = std::max<std::size_t>(1, M / rows);
    total = D * per_dir;
    finished.reset(new std::atomic<unsigned char>[total]);
    for (std::size_t i = 0; i < total; ++i) finished[i].store(0, std::memory_order_relaxed);
  }

  // Chunk c of a direction: rows [c * rows, ...) counted in its processing order.
  std::pair<std::size_t, std::size_t> order_range(std::size_t c) const {
    return {c * rows, c + 1 == per_dir ? M : (c + 1) * rows};
  }
  std::size_t chunk_of(std::size_t q) const { return std::min(per_dir - 1, q / rows); }

  // Projects the next unclaimed chunk; false when none is left. A chunk that throws (its scratch
  // not allocated) still counts as finished, so that no member waits for it: rethrow() reports it
  // once the team is done.
  bool side() {
    if (next.load(std::memory_order_relaxed) >= total) return false;
    const std::size_t i = next.fetch_add(1, std::memory_order_relaxed);
    if (i >= total) return false;
    const std::size_t d = i % D;
    const auto [q0, q1] = order_range(i / D);
    try {
      if (dirs[d]->dd.reverse) {
        dirs[d]->project_rows(M - q1, M - q0);
      } else {
        dirs[d]->project_rows(q0, q1);
      }
    } catch (...) {
      if (!failed.test_and_set()) error = std::current_exception();
    }
    finished[i].store(1, std::memory_order_release);
    return true;
  }

  void rethrow() const {
    if (error) std::rethrow_exception(error);
  }

  // Whether the rows of step s are projected, in every direction.
  bool ready(std::size_t s) const {
    for (std::size_t d = 0; d < D; ++d) {
      // processing order: the rows of step s are [s * N, (s + 1) * N) in every direction
      const std::size_t c0 = chunk_of(s * N), c1 = chunk_of((s + 1) * N - 1);
      for (std::size_t c = c0; c <= c1; ++c) {
        if (finished[c * D + d].load(std::memory_order_acquire) == 0) return false;
      }
    }
    return true;
  }
};

// Rows per input-projection chunk when a helper thread projects ahead of a team of one: one
// AVX-512 row tile (more rows than gemm's dot-product path takes, so every chunk has the bits of
// the whole projection); L2's 50 rows make 3 chunks, the first ready after ~2 us.
constexpr std::size_t kHelperChunkRows = 14;

// Whether a one-direction layer whose steps run on one thread gets a helper that projects the
// input ahead of the time loop (time-major rows; at least two chunks).
template <class T>
bool wants_projection_helper(const LayerArgs<T>& a, std::size_t threads) {
  return threads > 1 && a.dirs.size() == 1 && !a.batch_major && team_members(a, threads) == 1 &&
         a.hidden > 0 && a.steps * a.batch >= 2 * kHelperChunkRows &&
         a.steps * a.batch > gemm::dot_rows(T());
}

}  // namespace

template <class T>
void forward_typed(const LayerArgs<T>& a) {
  // A small layer runs on the calling thread alone (waking a sleeping worker would cost more),
  // except that a one-direction layer may hand its input projection to a second thread, which
  // nothing waits for: the caller projects every chunk the helper has not started.
  const bool helper = wants_projection_helper(a, static_cast<std::size_t>(get_num_threads()));
  std::optional<ScopedSerial> serial;  // until the helper starts, nothing here asks for a worker
  if (helper || layer_is_small(a)) serial.emplace();
  const std::size_t D = a.dirs.size();
  const std::size_t H = a.hidden, N = a.batch, NH = N * H;
  if (a.steps == 0) {
    for (const auto& dd : a.dirs) {
      std::copy(dd.h0, dd.h0 + NH, dd.h_last);
      if (a.mode == Mode::lstm) std::copy(dd.c0, dd.c0 + NH, dd.c_last);
    }
    return;
  }
  const std::size_t threads = serial ? 1 : static_cast<std::size_t>(get_num_threads());
  const std::size_t max_members = team_members(a, threads);
  std::vector<std::unique_ptr<ForwardDirection<T>>> dirs;
  const std::size_t G = H * gate_count(a.mode);
  ScratchBuffer bias = acquire_scratch(std::max<std::size_t>(1, D * G) * sizeof(T));
  // A team on one direction projects the input in chunks of rows, between and beside the steps,
  // instead of before the loop (time-major rows; the chunks keep every row range above
  // dot_rows()), and with enough batch rows splits them, not the hidden units. Two directions
  // (a member each) keep the projection first: L3 ran 1-7% slower with the chunks in 3 of 3
  // alternations (within noise; a member's step waits for both directions' chunks, and a member
  // away on a chunk has its direction's blocks taken by the other, with its weights).
  const bool side = max_members > 1 && D == 1 && !a.batch_major && a.steps * N > gemm::dot_rows(T());
  const bool batch_split = side && N >= kMinRowsPerMember * max_members;
  for (std::size_t d = 0; d < D; ++d) {
    dirs.push_back(std::make_unique<ForwardDirection<T>>(a, d, max_members == 1 || batch_split));
    dirs[d]->prepare_projection(bias.as<T>() + d * G);
    if (!side && !helper) dirs[d]->project_input();
    dirs[d]->start();
  }
  MemberScratch<T> scratch(max_members * D, dirs[0]->scratch_elements());
  if (helper) {
    ProjectionChunks<T> chunks(dirs, kHelperChunkRows);
    // chunk 0 (the caller): the time loop, projecting a chunk itself while its rows are not
    // ready; chunk 1 (a worker, or the caller afterwards, finding nothing left): the chunks
    serial.reset();
    parallel_for(2, [&](std::size_t task, std::size_t) {
      if (task == 0) {
        run_team(dirs, a.steps, 1, scratch, chunks);
      } else {
        while (chunks.side()) {
        }
      }
    });
    chunks.rethrow();
    return;
  }
  if (!side) {
    run_team(dirs, a.steps, max_members, scratch);
    return;
  }
  ProjectionChunks<T> chunks(dirs, kProjectionChunkRows);
  if (batch_split) {
    run_batch_team(dirs, a.steps, max_members, scratch, chunks);
  } else {
    run_team(dirs, a.steps, max_members, scratch, chunks);
  }
  chunks.rethrow();
}

template void forward_typed<float>(const LayerArgs<float>& a);
template void forward_typed<double>(const LayerArgs<double>& a);

}  // namespace nnkern::rnn::detail
