#include "rnn/rnn_op.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <atomic>
#include <exception>
#include <optional>
#include <thread>

#include "core/dispatch.h"
#include "core/thread_pool.h"
#include "core/workspace.h"
#include "gemm/gemm.h"
#include "gemm/gemm_ukernel.h"
#include "rnn/rnn_pointwise.h"
#include "vmath/vactivation.h"

namespace nnkern::rnn {
namespace {

using gemm::GemmArgs;
using gemm::MatrixRef;
using gemm::PreparedB;
using gemm::row_major;

// Below this many FLOPs per time step, a direction runs on one thread: waiting
// for the other members' blocks at every step would cost more than the split saves.
constexpr double kMinSplitStepFlops = double(1 << 18);

// Rows of one chunk of the input projection when a team computes it beside the time loop: a
// multiple of every kernel family's tile height (14, 6, 4 rows), ~0.5 ms of work at LSTM 256/256
// (L1, 2 threads: 168 rows measured ~2% faster than 84 or 112, within noise of 336).
constexpr std::size_t kProjectionChunkRows = 168;

// A single direction is split by batch rows, not hidden units, when every member gets at least
// this many rows (measured at 16: L1/G1; fewer rows per member re-stream all of W_hh^T for
// thin row tiles, where splitting the units halves each member's weights instead).
constexpr std::size_t kMinRowsPerMember = 8;

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

// The elementwise passes of the kernel family in use.
template <class T>
PointwiseFns<T> pointwise_fns();

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

// Weight-cache tags of the operands prepared from the weights.
constexpr std::uint64_t kTagRecurrent = 0x524e4e31, kTagRecurrentBackward = 0x524e4e32, kTagProjection = 0x524e4e33;

// ------------------------------------------------------------------ the team

// A whole layer below this many FLOPs runs on the calling thread alone, input
// projection and weight gradients included: waking a sleeping worker costs
// more (measured ~80 us on this VM for the batch-1 LSTM row) than it saves.
constexpr double kMinParallelLayerFlops = double(1 << 24);

template <class T>
bool layer_is_small(const LayerArgs<T>& a) {
  const double g = double(a.hidden * gate_count(a.mode));
  return 2.0 * double(a.steps) * double(a.batch) * g * double(a.input + a.hidden) * double(a.dirs.size()) <
         kMinParallelLayerFlops;
}

// Members to ask for: two directions run side by side; one direction is split
// when a step is big enough.
template <class T>
std::size_t team_members(const LayerArgs<T>& a, std::size_t threads) {
  const double step_flops = 2.0 * double(a.batch) * double(a.hidden) * double(a.hidden * gate_count(a.mode));
  if (a.dirs.size() == 2) return step_flops * double(a.steps) >= kMinSplitStepFlops ? threads : 1;
  return step_flops >= kMinSplitStepFlops ? threads : 1;
}

// The hidden units [u0, u1) of block `rank` of `size`, in whole runs of `align`.
std::pair<std::size_t, std::size_t> units_of(std::size_t hidden, std::size_t align, std::size_t rank,
                                             std::size_t size) {
  const std::size_t blocks = (hidden + align - 1) / align;
  const auto [b0, b1] = chunk_range(blocks, size, rank);
  return {std::min(hidden, b0 * align), std::min(hidden, b1 * align)};
}

// Per-member A-panel scratch of one prepared operand, carved from one buffer.
template <class T>
struct MemberScratch {
  ScratchBuffer buf;
  std::size_t per = 0;
  MemberScratch(std::size_t members, std::size_t elements)
      : buf(acquire_scratch(std::max<std::size_t>(1, members * (elements + 16)) * sizeof(T))), per(elements + 16) {}
  T* of(std::size_t member) const { return buf.as<T>() + member * per; }
};

// Waits until ready() holds, running gate.side() (work no member waits for, or that ready()
// needs) while there is some, then as spin_wait: ~2 K pauses, then yielding the CPU each round.
template <class Ready, class Gate>
void wait_with_side_work(Ready ready, Gate& gate) {
  for (unsigned spins = 0; !ready();) {
    if (gate.side()) {
      spins = 0;
    } else if (spins < (1u << 11)) {
      ++spins;
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    } else {
      std::this_thread::yield();
    }
  }
}

// The time loop as a schedule of blocks: every step of every direction is cut
// into the same `per_dir` runs of hidden units (whole register-tile columns),
// and every block of a step needs every block of the step before (its
// multiply reads the whole hidden state, or the whole gate gradient, of that
// step). Each member reserves its own share of a step at once -- the same
// blocks every step, so their weights stay in its core's cache -- computes
// it, then takes any block of the step still unclaimed, from the far end of
// the next member's share. So a member that the OS or the hypervisor holds
// back between two steps (a shared vCPU, or one slow to wake after idling)
// does not hold the step up: the others compute its share; only a member
// held back in the middle of its share still delays the step, as with a
// barrier. Which member computes a block does not change its bits (every
// element is one FMA chain whatever the column range; the elementwise passes
// have no reductions).
struct StepSchedule {
  std::size_t steps, dirs, per_dir, blocks;
  std::unique_ptr<std::atomic<std::size_t>[]> claimed;  // per block: the next step it may be claimed for
  alignas(64) std::atomic<std::size_t> done{0};        // blocks finished, over all steps

  StepSchedule(std::size_t steps_, std::size_t dirs_, std::size_t per_dir_)
      : steps(steps_), dirs(dirs_), per_dir(per_dir_), blocks(dirs_ * per_dir_),
        claimed(new std::atomic<std::size_t>[dirs_ * per_dir_]) {
    for (std::size_t b = 0; b < blocks; ++b) claimed[b].store(0, std::memory_order_relaxed);
  }

  // Member `rank` of `size`: work(step, direction, block of the direction) for every block it wins.
  template <class Work>
  void run(std::size_t rank, std::size_t size, Work&& work) {
    run(rank, size, work, NoSideWork());
  }

  // Nothing to do besides the steps: every step may start once the step before is done.
  struct NoSideWork {
    bool ready(std::size_t) const { return true; }
    bool side() const { return false; }
  };

  // As run(rank, size, work), and step s also waits for gate.ready(s); while a member cannot
  // start a step it calls gate.side() (work that no step waits for, or that ready() needs:
  // true when it did some) before it spins.
  template <class Work, class Gate>
  void run(std::size_t rank, std::size_t size, Work&& work, Gate&& gate) {
    const auto [own0, own1] = chunk_range(blocks, size, rank);
    std::vector<char> won(own1 - own0);
    for (std::size_t s = 0; s < steps;) {
      const std::size_t need = s * blocks;
      wait_with_side_work([&] { return gate.ready(s) && done.load(std::memory_order_acquire) >= need; }, gate);
      // reserve the own share at once (another member takes a block of it only while this one is
      // away), compute it, then any block still unclaimed, backwards from just before own0
      for (std::size_t b = own0; b < own1; ++b) won[b - own0] = claim(b, s);
      for (std::size_t b = own0; b < own1; ++b) {
        if (won[b - own0]) finish(s, b, work);
      }
      for (std::size_t i = 1; i <= blocks - (own1 - own0); ++i) {
        const std::size_t b = (own0 + blocks - i) % blocks;
        if (claim(b, s)) finish(s, b, work);
      }
      // the next step, or later ones when this member was held back: done / blocks steps are complete
      s = std::max(s + 1, done.load(std::memory_order_acquire) / blocks);
    }
  }

 private:
  bool claim(std::size_t b, std::size_t s) {
    std::size_t expected = s;
    return claimed[b].load(std::memory_order_relaxed) == s &&
           claimed[b].compare_exchange_strong(expected, s + 1, std::memory_order_acq_rel);
  }
  template <class Work>
  void finish(std::size_t s, std::size_t b, Work& work) {
    work(s, b / per_dir, b % per_dir);
    done.fetch_add(1, std::memory_order_acq_rel);
  }
};

// Blocks per direction and step: one (a team of one multiplies every gate at
// once), else one per member (its share; with two directions on two threads,
// one direction each), in whole runs of `align` units (four runs for 1-2
// rows: the small-batch kernel's four panels).
std::size_t blocks_per_dir(std::size_t hidden, std::size_t align, std::size_t batch, std::size_t dirs,
                           std::size_t max_members) {
  if (max_members <= 1) return 1;
  const std::size_t unit = align * (batch <= gemm::kWideMaxRows ? gemm::kWidePanels : 1);
  const std::size_t runs = std::max<std::size_t>(1, (hidden + unit - 1) / unit);
  return std::min(runs, std::max<std::size_t>(1, (max_members + dirs - 1) / dirs));
}

// Runs every direction's time loop (steps `steps`: the forward's, or the
// backward's plus the initial-state step) on a team of up to max_members.
template <class Direction, class T, class Gate = StepSchedule::NoSideWork>
void run_team(const std::vector<std::unique_ptr<Direction>>& dirs, std::size_t steps, std::size_t max_members,
              const MemberScratch<T>& scratch, Gate&& gate = Gate()) {
  const std::size_t D = dirs.size();
  const std::size_t H = dirs[0]->H;
  if (max_members == 1) {
    // A team of one (the batch-1 latency rows): every step whole, in order, without the
    // schedule's claims and counters (~3% of L2's native time in perf). Same bits.
    for (std::size_t s = 0; s < steps; ++s) {
      wait_with_side_work([&] { return gate.ready(s); }, gate);
      for (std::size_t d = 0; d < D; ++d) {
        T* own = scratch.of(d);
        dirs[d]->pack(s, own);
        if (H > 0) dirs[d]->block(s, 0, H, own);
      }
    }
    return;
  }
  const std::size_t per_dir = blocks_per_dir(H, dirs[0]->align(), dirs[0]->N, D, max_members);
  StepSchedule schedule(steps, D, per_dir);
  parallel_team(max_members, [&](std::size_t rank, std::size_t size) {
    std::size_t packed[2] = {steps, steps};  // the step whose operand this member's scratch holds, per direction
    schedule.run(rank, size, [&](std::size_t s, std::size_t d, std::size_t b) {
      T* own = scratch.of(rank * D + d);
      if (packed[d] != s) {
        dirs[d]->pack(s, own);
        packed[d] = s;
      }
      const auto [u0, u1] = units_of(H, dirs[d]->align(), b, per_dir);
      if (u1 > u0) dirs[d]->block(s, u0, u1, own);
    }, gate);
  });
}

// Every direction's time loop with the batch split between the members: batch rows are
// independent sequences, so a member computes all steps of its rows without waiting for the
// others (each streams the whole W_hh^T, and reads only the hidden states it wrote). Step s also
// waits for gate.ready(s), running gate.side() meanwhile. Every element has the bits of the
// unsplit loop (one FMA chain per element whatever the row tile; no reductions across rows).
template <class Direction, class T, class Gate>
void run_batch_team(const std::vector<std::unique_ptr<Direction>>& dirs, std::size_t steps, std::size_t max_members,
                    const MemberScratch<T>& scratch, Gate& gate) {
  const std::size_t D = dirs.size();
  const std::size_t H = dirs[0]->H, N = dirs[0]->N;
  parallel_team(max_members, [&](std::size_t rank, std::size_t size) {
    const auto [n0, n1] = chunk_range(N, size, rank);
    for (std::size_t s = 0; s < steps; ++s) {
      wait_with_side_work([&] { return gate.ready(s); }, gate);
      for (std::size_t d = 0; d < D; ++d) {
        T* own = scratch.of(rank * D + d);
        dirs[d]->pack(s, own, n0, n1);
        if (n1 > n0 && H > 0) dirs[d]->block(s, 0, H, own, n0, n1);
      }
    }
  });
}

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

// ------------------------------------------------------------------ backward

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

}  // namespace

std::size_t gate_count(Mode mode) {
  switch (mode) {
    case Mode::lstm: return 4;
    case Mode::gru: return 3;
    default: return 1;
  }
}

void layer_forward(const LayerArgs<float>& args) { forward_typed(args); }
void layer_forward(const LayerArgs<double>& args) { forward_typed(args); }
void layer_backward(const LayerArgs<float>& args) { backward_typed(args); }
void layer_backward(const LayerArgs<double>& args) { backward_typed(args); }

}  // namespace nnkern::rnn
