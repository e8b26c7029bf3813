// The GEMM operator: cache blocking, packing, and the split over threads.
//
// Loop nest (Goto/BLIS): for each nc-wide block of columns, for each kc-deep
// slice of k, pack B (kc x nc) into NR-wide panels; for each mc-tall block of
// rows, pack A (mc x kc) into MR-tall panels; then run the micro-kernel over
// every (MR panel, NR panel) pair, the B panels innermost: one MR x kc panel
// of A stays in L1 while the B block streams from L2. (The other order, one
// B panel in L1 under a streaming A block, measured ~8% slower on M1.)
#include "gemm/gemm.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "core/dispatch.h"
#include "core/errors.h"
#include "core/thread_pool.h"
#include "core/weight_cache.h"
#include "core/workspace.h"
#include "gemm/gemm_ukernel.h"

namespace nnkern::gemm {
namespace {

template <class T>
struct GemmKernel {
  GemmUkernelFn<T> fn;
  std::size_t mr, nr;
  PackTransposeFn<T> pack_transpose;  // null: the portable loop
  GemmDotFn<T> dot;                   // null: small m takes the packed path too
  GemmWideFn<T> wide = nullptr;       // null: 1-2 row tiles run one panel at a time
  GemmStridedFn<T> strided = nullptr; // null: B is always packed
};

// Rows up to which `dot` replaces the packed path (when B = W^T with W's rows
// contiguous): there packing W would cost as much as the multiply itself.
constexpr std::size_t kDotMaxM = 4;

struct GemmConfig {
  PerIsa<GemmKernel<float>> f32;
  PerIsa<GemmKernel<double>> f64;
};

const GemmConfig kGemm = {
    {{f32_gemm_4x4_scalar, 4, 4, nullptr, nullptr},
     {NNKERN_X86_ONLY(f32_gemm_6x16_avx2), 6, 16, nullptr, nullptr},
     {NNKERN_X86_ONLY(f32_gemm_14x32_avx512), 14, 32, NNKERN_X86_ONLY(f32_pack_transpose_avx512),
      NNKERN_X86_ONLY(f32_gemm_dot_4_avx512), NNKERN_X86_ONLY(f32_gemm_2x128_avx512),
      NNKERN_X86_ONLY(f32_gemm_14x32_strided_avx512)}},
    {{f64_gemm_4x4_scalar, 4, 4, nullptr, nullptr},
     {NNKERN_X86_ONLY(f64_gemm_6x8_avx2), 6, 8, nullptr, nullptr},
     {NNKERN_X86_ONLY(f64_gemm_14x16_avx512), 14, 16, nullptr, nullptr}},
};

GemmKernel<float> kernel_for(Isa isa, float) { return kGemm.f32.pick(isa); }
GemmKernel<double> kernel_for(Isa isa, double) { return kGemm.f64.pick(isa); }

// Cache blocking, from this CPU class's caches (48 KiB L1d, 2 MiB L2 per
// core; a larger shared L3):
//  - kc: one MR x kc panel of A stays in L1 while B panels stream past it,
//    so it may take 2/3 of L1 (32 KiB); capped at 512: deeper slices gain
//    nothing more (C is re-read once per slice, 2 times for k = 1024) and
//    narrow the B block (nc). On M1, kc = 512 measured ~3% faster than 256.
//  - nc: the kc x nc block of B takes half of L2 (1 MiB), so it is read
//    from L2, not memory, by every A panel.
//  - mc: A panels are used one at a time, so mc only bounds the scratch
//    (4 MiB of packed A).
constexpr std::size_t kL1PanelBytes = std::size_t{32} << 10;
constexpr std::size_t kL2BlockBytes = std::size_t{1} << 20;
constexpr std::size_t kABlockBytes = std::size_t{4} << 20;
constexpr std::size_t kMaxKc = 512;
// Rows ahead that pack_panels prefetches when it walks a source row by row.
constexpr std::size_t kPackAhead = 4;
// PreparedB packs B of at least this size over the threads, in tasks of this
// many panels of one kc slice (a weight gradient's 6.5 MB [x | h]: every
// thread packed all of it for its own rows before).
constexpr std::size_t kParallelPackBytes = std::size_t{1} << 20;
constexpr std::size_t kPackChunkPanels = 4;

// Below ~0.5 MFLOP (a few microseconds) a task is not worth waking a thread.
constexpr double kMinTaskFlops = 1 << 19;

std::size_t round_up(std::size_t x, std::size_t to) { return (x + to - 1) / to * to; }

// Columns of a row-major B (rows `ldb` elements apart) before its rows' first 64-byte boundary
// (fewer than nr), when every row starts at the same offset into a cache line; else 0.
template <class T>
std::size_t lead_columns(const T* b, std::size_t ldb, std::size_t nr) {
  const auto addr = reinterpret_cast<std::uintptr_t>(b);
  if (addr % sizeof(T) != 0 || (ldb * sizeof(T)) % 64 != 0) return 0;
  return std::min(nr - 1, ((64 - addr % 64) % 64) / sizeof(T));
}

struct Blocking {
  std::size_t kc, mc, nc;
};

template <class T>
Blocking blocking_for(const GemmKernel<T>& uk, std::size_t k) {
  const std::size_t kc = std::max<std::size_t>(1, std::min({kL1PanelBytes / (uk.mr * sizeof(T)), kMaxKc, k}));
  const std::size_t mc = std::max<std::size_t>(1, kABlockBytes / (kc * sizeof(T) * uk.mr)) * uk.mr;
  const std::size_t nc = std::max<std::size_t>(1, kL2BlockBytes / (kc * sizeof(T) * uk.nr)) * uk.nr;
  return {kc, mc, nc};
}

// Panels of `width` lines (rows of A, columns of B) x depth, from a source
// where line l, step p is at src[l * line_stride + p * step_stride]:
// out[panel][p][l], lines past `lines` zero. When a line's steps are
// contiguous, the ISA's transpose packs it (if it has one); otherwise the
// loop order follows the unit-stride direction.
template <class T>
void pack_panels(std::size_t lines, std::size_t depth, const T* src, std::ptrdiff_t line_stride,
                 std::ptrdiff_t step_stride, std::size_t width, PackTransposeFn<T> transpose, T* out,
                 bool pad = true) {
  if (step_stride != 1 && line_stride == 1) {
    // Lines contiguous along each step (B of a convolution: rows of input
    // pixels): walk the source row by row, every panel at once, so that each
    // source row streams in order (panel by panel, the rows would be read as
    // `depth` interleaved streams, more than the prefetchers follow).
    const std::size_t full = lines / width, rest = lines % width;
    const auto rows = [&](auto fixed_width) {
      // a compile-time width: the copy of one panel line is a few vector
      // moves, not a call to memmove
      constexpr std::size_t kW = decltype(fixed_width)::value;
      const std::size_t w = kW != 0 ? kW : width;
      for (std::size_t p = 0; p < depth; ++p) {
        const T* step = src + static_cast<std::ptrdiff_t>(p) * step_stride;
        if (p + kPackAhead < depth) {
          // each source row is a short run in its own page: the hardware
          // prefetchers start too late, so ask for a later row now
          const char* ahead = reinterpret_cast<const char*>(step + static_cast<std::ptrdiff_t>(kPackAhead) * step_stride);
          for (std::size_t byte = 0; byte < lines * sizeof(T); byte += 64) __builtin_prefetch(ahead + byte);
        }
        T* o = out + p * w;
        for (std::size_t q = 0; q < full; ++q, o += w * depth) std::memcpy(o, step + q * w, w * sizeof(T));
        if (rest != 0) {
          std::memcpy(o, step + full * w, rest * sizeof(T));
          if (pad) std::fill(o + rest, o + w, T(0));
        }
      }
    };
    if (width * sizeof(T) == 128) {
      rows(std::integral_constant<std::size_t, 128 / sizeof(T)>());
    } else if (width * sizeof(T) == 64) {
      rows(std::integral_constant<std::size_t, 64 / sizeof(T)>());
    } else if (width == 14) {
      // the AVX-512 kernels' A panels (MR = 14): the recurrent backward packs dh^T this way
      rows(std::integral_constant<std::size_t, 14>());
    } else {
      rows(std::integral_constant<std::size_t, 0>());
    }
    return;
  }
  for (std::size_t l0 = 0; l0 < lines; l0 += width, out += width * depth) {
    const std::size_t h = std::min(width, lines - l0);
    const T* s = src + static_cast<std::ptrdiff_t>(l0) * line_stride;
    if (step_stride == 1 && transpose != nullptr && h >= 8) {
      transpose(h, depth, s, line_stride, out, width);
    } else if (step_stride == 1) {
      for (std::size_t l = 0; l < h; ++l) {
        const T* line = s + static_cast<std::ptrdiff_t>(l) * line_stride;
        for (std::size_t p = 0; p < depth; ++p) out[p * width + l] = line[p];
      }
    } else {
      for (std::size_t p = 0; p < depth; ++p) {
        for (std::size_t l = 0; l < h; ++l) {
          out[p * width + l] = s[static_cast<std::ptrdiff_t>(l) * line_stride + static_cast<std::ptrdiff_t>(p) * step_stride];
        }
      }
    }
    if (h < width && pad) {
      for (std::size_t p = 0; p < depth; ++p) std::fill(out + p * width + h, out + (p + 1) * width, T(0));
    }
  }
}

// The micro-kernel over every (MR panel of apack, NR panel of bpack) pair of
// one kb-deep slice: C rows [0, mb) x columns [0, nb), the B panels innermost.
template <class T>
void run_kernels(const GemmKernel<T>& uk, std::size_t mb, const T* apack, std::size_t nb, const T* bpack,
                 std::size_t kb, T* c, std::size_t ldc, T alpha, T beta, const T* bias) {
  for (std::size_t ir = 0; ir < mb; ir += uk.mr) {
    const std::size_t mr = std::min(uk.mr, mb - ir);
    T* c_row = c + ir * ldc;
    for (std::size_t jr = 0; jr < nb; jr += uk.nr) {
      uk.fn(mr, std::min(uk.nr, nb - jr), kb, apack + ir * kb, bpack + jr * kb, c_row + jr, ldc, alpha, beta,
            bias != nullptr ? bias + jr : nullptr);
    }
  }
}

// The rows [i0, i1) x columns [j0, j1) of C, on the calling thread.
// prepacked: all of B already packed (PreparedB's layout: slice pc at
// pc * n_pad, panel p of it at + p * nr * kb), or null to pack per block.
template <class T>
void gemm_block(const GemmArgs<T>& g, const GemmKernel<T>& uk, const Blocking& bl, std::size_t i0, std::size_t i1,
                std::size_t j0, std::size_t j1, const T* prepacked = nullptr, std::size_t n_pad = 0) {
  const std::size_t kc_max = bl.kc;
  const std::size_t a_elems = std::min(bl.mc, round_up(i1 - i0, uk.mr)) * kc_max;
  const std::size_t b_elems = prepacked != nullptr ? 0 : std::min(bl.nc, round_up(j1 - j0, uk.nr)) * kc_max;
  // B first: the kernels load B panels with aligned loads (scratch is 64-byte
  // aligned, and a panel row is NR elements, a multiple of 64 bytes).
  ScratchBuffer scratch = acquire_scratch((b_elems + a_elems) * sizeof(T));
  T* const bpack = scratch.as<T>();
  T* const apack = bpack + b_elems;

  const auto& a = g.a;
  const auto& b = g.b;
  // rows [ic, ic + mb) x depth [pc, pc + kb) of A into MR-tall panels
  const auto pack_a_block = [&](std::size_t ic, std::size_t mb, std::size_t pc, std::size_t kb) {
    pack_panels(mb, kb,
                a.data + static_cast<std::ptrdiff_t>(ic) * a.row_stride + static_cast<std::ptrdiff_t>(pc) * a.col_stride,
                a.row_stride, a.col_stride, uk.mr, uk.pack_transpose, apack);
  };
  if (prepacked != nullptr) {
    // B needs no packing, so each A block is packed once and multiplied by
    // every nc block of B in turn (packing per B block would repack A
    // n / nc times).
    for (std::size_t pc = 0; pc == 0 || pc < g.k; pc += kc_max) {
      const std::size_t kb = std::min(kc_max, g.k - pc);
      const T beta = pc == 0 ? g.beta : T(1);
      for (std::size_t ic = i0; ic < i1; ic += bl.mc) {
        const std::size_t mb = std::min(bl.mc, i1 - ic);
        pack_a_block(ic, mb, pc, kb);
        for (std::size_t jc = j0; jc < j1; jc += bl.nc) {
          const std::size_t nb = std::min(bl.nc, j1 - jc);
          const T* bias = pc == 0 && g.bias != nullptr ? g.bias + jc : nullptr;
          run_kernels(uk, mb, apack, nb, prepacked + pc * n_pad + jc * kb, kb, g.c + ic * g.ldc + jc, g.ldc,
                      g.alpha, beta, bias);
        }
      }
    }
    return;
  }
  for (std::size_t jc = j0; jc < j1; jc += bl.nc) {
    const std::size_t nb = std::min(bl.nc, j1 - jc);
    // k == 0 still takes one (empty) slice: C = beta*C + bias.
    for (std::size_t pc = 0; pc == 0 || pc < g.k; pc += kc_max) {
      const std::size_t kb = std::min(kc_max, g.k - pc);
      pack_panels(nb, kb,
                  b.data + static_cast<std::ptrdiff_t>(pc) * b.row_stride +
                      static_cast<std::ptrdiff_t>(jc) * b.col_stride,
                  b.col_stride, b.row_stride, uk.nr, uk.pack_transpose, bpack);
      // Later slices accumulate into what the first one wrote.
      const T beta = pc == 0 ? g.beta : T(1);
      const T* bias = pc == 0 && g.bias != nullptr ? g.bias + jc : nullptr;
      for (std::size_t ic = i0; ic < i1; ic += bl.mc) {
        const std::size_t mb = std::min(bl.mc, i1 - ic);
        pack_a_block(ic, mb, pc, kb);
        run_kernels(uk, mb, apack, nb, bpack, kb, g.c + ic * g.ldc + jc, g.ldc, g.alpha, beta, bias);
      }
    }
  }
}

// Small m: columns split over threads in runs of 64 (a multiple of the dot
// kernel's 4), each column's sum computed whole by one thread. More rows than
// the kernel takes (kDotMaxM) run as groups of kDotMaxM rows over blocks of
// W's rows sized to stay in L1 (W streams from memory once, the row groups
// reuse each block from L1). Every element is the kernel's own 16-lane sum
// whatever its group, block or thread: the same bits for any m and split.
template <class T>
void gemm_dot(const GemmArgs<T>& g, GemmDotFn<T> dot) {
  constexpr std::size_t kCols = 64, kL1Bytes = std::size_t{16} << 10;
  const std::size_t col_tasks = (g.n + kCols - 1) / kCols;
  const double flops = 2.0 * static_cast<double>(g.m) * static_cast<double>(g.n) * static_cast<double>(g.k);
  const std::size_t tasks =
      std::max<std::size_t>(1, std::min<double>(static_cast<double>(col_tasks), flops / kMinTaskFlops));
  const auto lda = static_cast<std::size_t>(g.a.row_stride), ldw = static_cast<std::size_t>(g.b.col_stride);
  const std::size_t l1_rows = kL1Bytes / (std::max<std::size_t>(g.k, 1) * sizeof(T));
  const std::size_t block = g.m <= kDotMaxM ? kCols : std::max<std::size_t>(4, std::min(kCols, l1_rows) / 4 * 4);
  parallel_for(tasks, [&](std::size_t first, std::size_t last) {
    const std::size_t j0 = chunk_range(col_tasks, tasks, first).first * kCols;
    const std::size_t j1 = std::min(g.n, chunk_range(col_tasks, tasks, last - 1).second * kCols);
    for (std::size_t jb = j0; jb < j1; jb += block) {
      const std::size_t nb = std::min(block, j1 - jb);
      for (std::size_t i = 0; i < g.m; i += kDotMaxM) {
        dot(std::min(kDotMaxM, g.m - i), nb, g.k, g.a.data + i * lda, lda, g.b.data + jb * ldw, ldw,
            g.c + i * g.ldc + jb, g.ldc, g.alpha, g.beta, g.bias != nullptr ? g.bias + jb : nullptr);
      }
    }
  });
}

// The dot kernel's operands: A's and W's rows contiguous (B = W^T, unit row stride).
template <class T>
bool dot_operands(const GemmArgs<T>& g) {
  return g.a.col_stride == 1 && g.b.row_stride == 1 && g.a.row_stride >= 0 && g.b.col_stride >= 0;
}

// prepacked / n_pad: B packed once (PreparedB), or null.
template <class T>
void gemm_typed(const GemmArgs<T>& g, Isa isa, const T* prepacked = nullptr, std::size_t n_pad = 0) {
  if (g.m == 0 || g.n == 0) return;
  const GemmKernel<T> uk = kernel_for(isa, T());
  if (uk.dot != nullptr && g.m <= kDotMaxM && dot_operands(g)) {
    gemm_dot(g, uk.dot);
    return;
  }
  const Blocking bl = blocking_for(uk, g.k);
  // Split the larger tile dimension into contiguous runs of whole tiles; the
  // other operand is packed by every task (the price of tasks that need no
  // synchronisation). A prepacked B is shared: split the rows when there are
  // enough for every thread.
  const std::size_t m_tiles = (g.m + uk.mr - 1) / uk.mr;
  const std::size_t n_tiles = (g.n + uk.nr - 1) / uk.nr;
  const bool split_n = prepacked != nullptr ? m_tiles < static_cast<std::size_t>(get_num_threads()) && n_tiles > m_tiles
                                            : n_tiles >= m_tiles;
  const std::size_t tiles = split_n ? n_tiles : m_tiles;
  const double flops = 2.0 * static_cast<double>(g.m) * static_cast<double>(g.n) *
                       static_cast<double>(std::max<std::size_t>(g.k, 1));
  const std::size_t tasks = std::max<std::size_t>(1, std::min<double>(static_cast<double>(tiles), flops / kMinTaskFlops));
  parallel_for(tasks, [&](std::size_t first, std::size_t last) {
    const std::size_t t0 = chunk_range(tiles, tasks, first).first;
    const std::size_t t1 = chunk_range(tiles, tasks, last - 1).second;
    if (split_n) {
      gemm_block(g, uk, bl, 0, g.m, t0 * uk.nr, std::min(g.n, t1 * uk.nr), prepacked, n_pad);
    } else {
      gemm_block(g, uk, bl, t0 * uk.mr, std::min(g.m, t1 * uk.mr), 0, g.n, prepacked, n_pad);
    }
  });
}

}  // namespace

std::size_t dot_rows(float) { return kernel_for(active_isa(), float()).dot != nullptr ? kDotMaxM : 0; }
std::size_t dot_rows(double) { return kernel_for(active_isa(), double()).dot != nullptr ? kDotMaxM : 0; }
std::size_t column_align(Isa isa, float) { return kernel_for(isa, float()).nr; }
std::size_t column_align(Isa isa, double) { return kernel_for(isa, double()).nr; }

void gemm(const GemmArgs<float>& args, Isa isa) { gemm_typed(args, isa); }
void gemm(const GemmArgs<double>& args, Isa isa) { gemm_typed(args, isa); }
bool gemm_by_rows(const GemmArgs<float>& g) {
  const GemmKernel<float> uk = kernel_for(active_isa(), float());
  if (uk.dot == nullptr || !dot_operands(g)) return false;
  if (g.m != 0 && g.n != 0) gemm_dot(g, uk.dot);
  return true;
}
bool gemm_by_rows(const GemmArgs<double>&) { return false; }

void gemm(const GemmArgs<float>& args) { gemm_typed(args, active_isa()); }
void gemm(const GemmArgs<double>& args) { gemm_typed(args, active_isa()); }
void gemm(const GemmArgs<float>& args, const PreparedB<float>& b) {
  gemm_typed(args, b.isa(), b.panels(), b.padded_columns());
}
void gemm(const GemmArgs<double>& args, const PreparedB<double>& b) {
  gemm_typed(args, b.isa(), b.panels(), b.padded_columns());
}

template <class T>
PreparedB<T>::PreparedB(const MatrixRef<T>& b, std::size_t k, std::size_t n, std::size_t max_m, Isa isa)
    : PreparedB(b, n, b, 0, k, max_m, isa) {}

template <class T>
PreparedB<T>::PreparedB(const MatrixRef<T>& left, std::size_t n_left, const MatrixRef<T>& right, std::size_t n_right,
                        std::size_t k, std::size_t max_m, Isa isa)
    : k_(k), n_(n_left + n_right), isa_(isa) {
  const GemmKernel<T> uk = kernel_for(isa, T());
  mr_ = uk.mr;
  nr_ = uk.nr;
  kc_ = blocking_for(uk, k).kc;
  if (n_right != 0 && n_left % nr_ != 0) throw value_error("PreparedB: the left part must be whole panels wide");
  scratch_ = round_up(std::max<std::size_t>(max_m, 1), mr_) * std::max<std::size_t>(k, 1);
  const std::size_t n_pad = round_up(n_, nr_);
  packed_ = acquire_scratch(std::max<std::size_t>(1, n_pad * k) * sizeof(T));
  T* out = packed_.as<T>();
  // Tasks of a few panels of one slice of one part: panel p of slice pc lands at
  // pc * n_pad + p * nr * kb whichever task packs it, so the split changes no value.
  struct Task {
    const MatrixRef<T>* part;
    std::size_t pc, kb, j, lines, col;
  };
  std::vector<Task> tasks;
  const std::size_t chunk = kPackChunkPanels * nr_;
  for (std::size_t pc = 0; pc < k; pc += kc_) {
    const std::size_t kb = std::min(kc_, k - pc);
    for (std::size_t j = 0; j < n_left; j += chunk) tasks.push_back({&left, pc, kb, j, std::min(chunk, n_left - j), j});
    for (std::size_t j = 0; j < n_right; j += chunk) {
      tasks.push_back({&right, pc, kb, j, std::min(chunk, n_right - j), n_left + j});
    }
  }
  auto pack = [&](std::size_t first, std::size_t last) {
    for (std::size_t t = first; t < last; ++t) {
      const Task& task = tasks[t];
      const MatrixRef<T>& b = *task.part;
      pack_panels(task.lines, task.kb,
                  b.data + static_cast<std::ptrdiff_t>(task.pc) * b.row_stride +
                      static_cast<std::ptrdiff_t>(task.j) * b.col_stride,
                  b.col_stride, b.row_stride, nr_, uk.pack_transpose, out + task.pc * n_pad + task.col * task.kb);
    }
  };
  if (n_ * k * sizeof(T) >= kParallelPackBytes) {
    parallel_for(tasks.size(), pack);
  } else {
    pack(0, tasks.size());
  }
}

// Row tiles of balanced heights (m = 32 on 14-row kernels: 11 + 11 + 10, not
// 14 + 14 + 4, whose last tile would be load-bound).
template <class T>
std::size_t PreparedB<T>::tile_rows(std::size_t m, std::size_t tile) const {
  const std::size_t tiles = (m + mr_ - 1) / mr_;
  return m / tiles + (tile < m % tiles ? 1 : 0);
}

template <class T>
void PreparedB<T>::pack_a(std::size_t m, const T* a, std::size_t lda, T* out) const {
  if (m == 0) return;
  const GemmKernel<T> uk = kernel_for(isa_, T());
  const std::size_t tiles = (m + mr_ - 1) / mr_;
  for (std::size_t pc = 0; pc < k_; pc += kc_) {
    const std::size_t kb = std::min(kc_, k_ - pc);
    T* slice = out + pc * tiles * mr_;
    for (std::size_t tile = 0, ir = 0; tile < tiles; ++tile) {
      const std::size_t mr = tile_rows(m, tile);
      // rows past mr are never read (a tile of mr rows runs the mr-row kernel): no padding
      pack_panels(mr, kb, a + ir * lda + pc, static_cast<std::ptrdiff_t>(lda), 1, mr_, uk.pack_transpose,
                  slice + tile * mr_ * kb, /*pad=*/false);
      ir += mr;
    }
  }
}

template <class T>
void PreparedB<T>::multiply_packed(std::size_t m, const T* packed_a, std::size_t j0, std::size_t j1, T* c,
                                   std::size_t ldc, T alpha, T beta, const T* bias) const {
  if (m == 0 || j1 <= j0) return;
  const GemmKernel<T> uk = kernel_for(isa_, T());
  const std::size_t n_pad = round_up(n_, nr_);
  const T* packed = packed_.as<T>();
  const std::size_t tiles = (m + mr_ - 1) / mr_;
  for (std::size_t pc = 0; pc == 0 || pc < k_; pc += kc_) {
    const std::size_t kb = std::min(kc_, k_ - pc);
    const T slice_beta = pc == 0 ? beta : T(1);
    const T* slice_bias = pc == 0 ? bias : nullptr;
    const T* b_slice = packed + pc * n_pad;
    const T* a_slice = packed_a + pc * tiles * mr_;
    if (tiles > 1) {
      // Several row tiles (the recurrent steps at batch 32: 11 + 11 + 10
      // rows): each B panel (kb x NR, 32 KB at kb = 256) once from L2, then
      // every row tile against it from L1; tile by tile, every panel would
      // stream from L2 once per tile.
      for (std::size_t jr = j0; jr < j1; jr += nr_) {
        for (std::size_t tile = 0, ir = 0; tile < tiles; ++tile) {
          const std::size_t mr = tile_rows(m, tile);
          uk.fn(mr, std::min(nr_, j1 - jr), kb, a_slice + tile * mr_ * kb, b_slice + jr * kb, c + ir * ldc + jr, ldc,
                alpha, slice_beta, slice_bias != nullptr ? slice_bias + jr : nullptr);
          ir += mr;
        }
      }
      if (k_ == 0) break;
      continue;
    }
    for (std::size_t tile = 0, ir = 0; tile < tiles; ++tile) {
      const std::size_t mr = tile_rows(m, tile);
      const T* panel = a_slice + tile * mr_ * kb;
      std::size_t jr = j0;
      if (uk.wide != nullptr && mr <= kWideMaxRows) {
        for (; jr < j1; jr += kWidePanels * nr_) {
          uk.wide(mr, std::min(kWidePanels * nr_, j1 - jr), kb, panel, b_slice + jr * kb, nr_ * kb, c + ir * ldc + jr,
                  ldc, alpha, slice_beta, slice_bias != nullptr ? slice_bias + jr : nullptr);
        }
      }
      for (; jr < j1; jr += nr_) {
        uk.fn(mr, std::min(nr_, j1 - jr), kb, panel, b_slice + jr * kb, c + ir * ldc + jr, ldc, alpha, slice_beta,
              slice_bias != nullptr ? slice_bias + jr : nullptr);
      }
      ir += mr;
    }
    if (k_ == 0) break;
  }
}

template <class T>
void PreparedB<T>::multiply(std::size_t m, const T* a, std::size_t lda, std::size_t j0, std::size_t j1, T* c,
                            std::size_t ldc, T alpha, T beta, const T* bias, T* scratch) const {
  pack_a(m, a, lda, scratch);
  multiply_packed(m, scratch, j0, j1, c, ldc, alpha, beta, bias);
}

template <class T>
PreparedA<T>::PreparedA(const MatrixRef<T>& a, std::size_t m, std::size_t k, Isa isa) : m_(m), k_(k), isa_(isa) {
  const GemmKernel<T> uk = kernel_for(isa, T());
  const Blocking bl = blocking_for(uk, k);
  kc_ = bl.kc;
  nc_ = bl.nc;
  m_pad_ = round_up(m, uk.mr);
  packed_ = acquire_array_memory(std::max<std::size_t>(1, m_pad_ * k) * sizeof(T));
  T* out = packed_.as<T>();
  for (std::size_t pc = 0; pc < k; pc += kc_) {
    const std::size_t kb = std::min(kc_, k - pc);
    pack_panels(m, kb, a.data + static_cast<std::ptrdiff_t>(pc) * a.col_stride, a.row_stride, a.col_stride, uk.mr,
                uk.pack_transpose, out + pc * m_pad_);
  }
}

template <class T>
std::size_t PreparedA<T>::scratch_elements(std::size_t n) const {
  const GemmKernel<T> uk = kernel_for(isa_, T());
  return std::min(nc_, round_up(std::max<std::size_t>(n, 1), uk.nr)) * kc_;
}

template <class T>
void PreparedA<T>::multiply(std::size_t n, const MatrixRef<T>& b, T* c, std::size_t ldc, T alpha, T beta,
                            const T* bias, T* scratch, BSource source, const T* row_bias) const {
  if (m_ == 0 || n == 0) return;
  const GemmKernel<T> uk = kernel_for(isa_, T());
  const T* packed = packed_.as<T>();
  if (uk.strided != nullptr && b.col_stride == 1 && b.row_stride >= 0 && k_ != 0) {
    // B's rows contiguous: no copy into panels; the kernel reads B's rows in
    // place. Each element: the kc slices in ascending order, one FMA chain
    // each, as in the packed loop below (the same bits).
    const auto ldb = static_cast<std::size_t>(b.row_stride);
    // Column panels start on 64-byte boundaries of B's rows where they can: NumPy aligns arrays to
    // 16 bytes only, and a vector load split over two cache lines on every row of B made C2 (a 1x1
    // convolution reading the input planes in place) 30-50% slower on Zen 4 (C++ harness: 8.0 vs
    // 10.5-12.0 ms at one thread). So when every row starts at the same offset into a line, the
    // first panel takes the columns before the first boundary. Which panel computes a column
    // does not change its bits.
    const std::size_t lead = lead_columns(b.data, ldb, uk.nr);
    const auto panel_end = [&](std::size_t jr) { return std::min(n, jr < lead ? lead : jr + uk.nr); };
    const auto tile = [&](std::size_t ir, std::size_t jr, std::size_t pc, const T* b_next) {
      const std::size_t kb = std::min(kc_, k_ - pc);
      uk.strided(std::min(uk.mr, m_ - ir), panel_end(jr) - jr, kb, packed + pc * m_pad_ + ir * kb,
                 b.data + pc * ldb + jr, ldb, b_next, c + ir * ldc + jr, ldc, alpha, pc == 0 ? beta : T(1),
                 pc == 0 && bias != nullptr ? bias + jr : nullptr,
                 pc + kb == k_ && row_bias != nullptr ? row_bias + ir : nullptr);
    };
    if (source == BSource::resident) {
      // B in L2 (just written): row tile by row tile, as the packed loop
      // (the A panel stays in L1, the B panels stream from L2).
      for (std::size_t pc = 0; pc < k_; pc += kc_) {
        for (std::size_t ir = 0; ir < m_; ir += uk.mr) {
          for (std::size_t jr = 0; jr < n; jr = panel_end(jr)) tile(ir, jr, pc, nullptr);
        }
      }
    } else {
      // B in memory, read once: panel by panel, every kc slice of it, every
      // row tile. The first row tile brings the panel in and fetches the
      // next one meanwhile (into L1: measured on C2 at one thread, 5-15%
      // faster than into L2 only); the others find it in L1/L2.
      for (std::size_t jr = 0, next = 0; jr < n; jr = next) {
        next = panel_end(jr);
        for (std::size_t pc = 0; pc < k_; pc += kc_) {
          const T* b_next = next < n ? b.data + pc * ldb + next : nullptr;
          for (std::size_t ir = 0; ir < m_; ir += uk.mr) tile(ir, jr, pc, ir == 0 ? b_next : nullptr);
        }
      }
    }
    return;
  }
  for (std::size_t jc = 0; jc < n; jc += nc_) {
    const std::size_t nb = std::min(nc_, n - jc);
    for (std::size_t pc = 0; pc == 0 || pc < k_; pc += kc_) {
      const std::size_t kb = std::min(kc_, k_ - pc);
      pack_panels(nb, kb,
                  b.data + static_cast<std::ptrdiff_t>(pc) * b.row_stride +
                      static_cast<std::ptrdiff_t>(jc) * b.col_stride,
                  b.col_stride, b.row_stride, uk.nr, uk.pack_transpose, scratch);
      const T* slice_bias = pc == 0 && bias != nullptr ? bias + jc : nullptr;
      run_kernels(uk, m_, packed + pc * m_pad_, nb, scratch, kb, c + jc, ldc, alpha, pc == 0 ? beta : T(1),
                  slice_bias);
      if (k_ == 0) break;
    }
  }
  if (row_bias != nullptr) {
    for (std::size_t i = 0; i < m_; ++i) {
      T* row = c + i * ldc;
      const T rb = row_bias[i];
      for (std::size_t j = 0; j < n; ++j) row[j] += rb;
    }
  }
}

namespace {

template <class T>
void column_sums_typed(std::size_t m, std::size_t n, const T* g, T* out) {
  constexpr std::size_t kColsPerTask = 64 / sizeof(T) * 4;
  // ~64 K elements per task: below that the wake-up costs more than the sum.
  constexpr std::size_t kMinTaskElems = std::size_t{1} << 16;
  const std::size_t col_tasks = (n + kColsPerTask - 1) / kColsPerTask;
  const std::size_t tasks = std::max<std::size_t>(1, std::min(col_tasks, m * n / kMinTaskElems));
  parallel_for(tasks, [&](std::size_t first, std::size_t last) {
    const std::size_t j0 = chunk_range(col_tasks, tasks, first).first * kColsPerTask;
    const std::size_t j1 = std::min(n, chunk_range(col_tasks, tasks, last - 1).second * kColsPerTask);
    std::fill(out + j0, out + j1, T(0));
    for (std::size_t i = 0; i < m; ++i) {
      const T* row = g + i * n;
      for (std::size_t j = j0; j < j1; ++j) out[j] += row[j];
    }
  });
}

}  // namespace

void column_sums(std::size_t m, std::size_t n, const float* g, float* out) { column_sums_typed(m, n, g, out); }
void column_sums(std::size_t m, std::size_t n, const double* g, double* out) { column_sums_typed(m, n, g, out); }

template <class T>
std::shared_ptr<const PreparedB<T>> cached_prepared_b(const MatrixRef<T>& b, std::size_t bytes, std::size_t k,
                                                     std::size_t n, std::size_t max_m, std::uint64_t tag) {
  WeightKey key;
  key.data = b.data;
  key.bytes = bytes;
  key.params = {tag, sizeof(T), static_cast<std::uint64_t>(active_isa()), k, n, max_m,
                static_cast<std::uint64_t>(b.row_stride), static_cast<std::uint64_t>(b.col_stride)};
  return cached_weight_as<PreparedB<T>>(key, [&] {
    auto prepared = std::make_shared<PreparedB<T>>(b, k, n, max_m, active_isa());
    return Derived{prepared, prepared->bytes()};
  });
}

template std::shared_ptr<const PreparedB<float>> cached_prepared_b(const MatrixRef<float>&, std::size_t, std::size_t,
                                                                    std::size_t, std::size_t, std::uint64_t);
template std::shared_ptr<const PreparedB<double>> cached_prepared_b(const MatrixRef<double>&, std::size_t,
                                                                     std::size_t, std::size_t, std::size_t,
                                                                     std::uint64_t);
template class PreparedB<float>;
template class PreparedB<double>;
template class PreparedA<float>;
template class PreparedA<double>;

}  // namespace nnkern::gemm
