// What the recurrent layer's forward and backward share (private to csrc/rnn/):
// the sizing of a layer's team, the per-member scratch, the step schedule and
// the step-loop templates that run every direction's time loop on the team,
// the weight-cache tags and the elementwise passes of the kernel family in
// use. The files:
//   rnn_op.cpp        the public entry points (rnn_op.h), gate_count, pointwise_fns
//   rnn_forward.cpp   the forward of a layer: ForwardDirection, the input projection's chunks
//   rnn_backward.cpp  the backward of a layer: BackwardDirection, the weight gradients
//   rnn_sequence.cpp  a whole multi-layer sequence for inference
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "core/thread_pool.h"
#include "core/workspace.h"
#include "gemm/gemm_ukernel.h"
#include "rnn/rnn_op.h"
#include "rnn/rnn_pointwise.h"

namespace nnkern::rnn::detail {

// Below this many FLOPs per time step, a direction runs on one thread: waiting
// for the other members' blocks at every step would cost more than the split saves.
constexpr double kMinSplitStepFlops = double(1 << 18);

// A single direction is split by batch rows, not hidden units, when every member gets at least
// this many rows (measured at 16: L1/G1; fewer rows per member re-stream all of W_hh^T for
// thin row tiles, where splitting the units halves each member's weights instead).
constexpr std::size_t kMinRowsPerMember = 8;

// The elementwise passes of the kernel family in use (rnn_op.cpp).
template <class T>
PointwiseFns<T> pointwise_fns();
template <>
PointwiseFns<float> pointwise_fns<float>();
template <>
PointwiseFns<double> pointwise_fns<double>();

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
inline std::pair<std::size_t, std::size_t> units_of(std::size_t hidden, std::size_t align, std::size_t rank,
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
inline std::size_t blocks_per_dir(std::size_t hidden, std::size_t align, std::size_t batch, std::size_t dirs,
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

// ------------------------------------------------------------------ forward and backward
// (instantiated for float and double in their files)

// rnn_forward.cpp
template <class T>
void forward_typed(const LayerArgs<T>& a);

// rnn_backward.cpp
template <class T>
void backward_typed(const LayerArgs<T>& a);

}  // namespace nnkern::rnn::detail
