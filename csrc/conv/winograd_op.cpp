#include "conv/winograd_op.h"

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "conv/winograd.h"
#include "core/dispatch.h"
#include "core/thread_pool.h"
#include "core/weight_cache.h"
#include "core/workspace.h"
#include "gemm/gemm.h"

namespace nnkern::ops {
namespace {

using std::ptrdiff_t;
using std::size_t;

constexpr size_t kXi = 36;  // products per tile: the 6x6 transformed tile
// A block's transformed inputs and products (36 x (C + O) floats per tile)
// take about this much, so that they stay in one core's 2 MiB L2 between the
// transforms and the GEMMs.
constexpr size_t kBlockBytes = size_t{3} << 19;
// The transformed filters (36 x O x C floats) live in scratch for the call:
// bounded so that huge layers take im2col instead of 4x their weights in
// memory. (Winograd measured faster than im2col up to 512 -> 512, C7.)
constexpr size_t kMaxFilterBytes = size_t{64} << 20;
// Columns of the GEMM's B panels (f32 AVX-512 micro-kernel: 14 x 32).
constexpr size_t kPanel = 32;

size_t ceil_div(size_t a, size_t b) { return (a + b - 1) / b; }

// Null where the AVX-512 family is not compiled (winograd_applies is false there).
const auto kFilter = NNKERN_X86_ONLY(conv::f32_wino43_filter_avx512);
const auto kInput = NNKERN_X86_ONLY(conv::f32_wino43_input_avx512);
const auto kOutput = NNKERN_X86_ONLY(conv::f32_wino43_output_avx512);
const auto kInputGather = NNKERN_X86_ONLY(conv::f32_wino43_input_gather_avx512);
const auto kOutputScatter = NNKERN_X86_ONLY(conv::f32_wino43_output_scatter_avx512);

// Planes with at most this many tiles per row (128 columns) take the gather /
// scatter transforms, 16 tiles per vector from any rows and images; wider ones
// (and tensors past int32 offsets) the row kernels, which load a row's tiles
// contiguously and de-interleave them in registers. Measured (2 threads,
// forward / grad_input, old -> new): 7x7 x 512 channels 4.5 -> 3.2 ms, 14x14
// x 256 3.9 -> 2.9, 28x28 x 128 3.8 -> 2.8, 56x56 x 64 (C1) 3.9 -> 3.6,
// 112x112 x 32 1.45 -> 1.30; 224x224 x 16 the same either way. (A row of
// 7x7's tiles filled 2 of the row kernels' 16 lanes, and their transposes cost
// more than the gathers even where the lanes are full.)
constexpr size_t kGatherMaxTilesPerRow = 32;

// The TileSet (conv/winograd.h) of the tiles [b0, b1) of a convolution: tile
// s is tile column s % tw of tile row s / tw, tile rows running through the images.
struct BlockTiles {
  std::vector<std::int32_t> in_off, out_off;
  std::vector<std::uint16_t> in_rows, in_cols, out_rows, out_cols;

  BlockTiles(const ConvGeometry& g, size_t tw, size_t th, size_t b0, size_t b1) {
    const size_t nt = b1 - b0, groups = ceil_div(nt, 16);
    in_off.assign(nt, 0);
    out_off.assign(nt, 0);
    in_rows.assign(6 * groups, 0);
    in_cols.assign(6 * groups, 0);
    out_rows.assign(4 * groups, 0);
    out_cols.assign(4 * groups, 0);
    const auto h = static_cast<ptrdiff_t>(g.h), w = static_cast<ptrdiff_t>(g.w);
    for (size_t t = 0; t < nt; ++t) {
      const size_t s = b0 + t, q = s / tw, tx = s % tw, n = q / th, ty = q % th;
      const ptrdiff_t iy = static_cast<ptrdiff_t>(4 * ty) - static_cast<ptrdiff_t>(g.pt);
      const ptrdiff_t ix = static_cast<ptrdiff_t>(4 * tx) - static_cast<ptrdiff_t>(g.pl);
      in_off[t] = static_cast<std::int32_t>(static_cast<ptrdiff_t>(n * g.c * g.h * g.w) + iy * w + ix);
      out_off[t] = static_cast<std::int32_t>(n * g.o * g.oh * g.ow + 4 * ty * g.ow + 4 * tx);
      const auto bit = static_cast<std::uint16_t>(1u << (t % 16));
      for (ptrdiff_t r = 0; r < 6; ++r) {
        if (iy + r >= 0 && iy + r < h) in_rows[6 * (t / 16) + r] |= bit;
        if (ix + r >= 0 && ix + r < w) in_cols[6 * (t / 16) + r] |= bit;
      }
      for (size_t i = 0; i < 4; ++i) {
        if (4 * ty + i < g.oh) out_rows[4 * (t / 16) + i] |= bit;
        if (4 * tx + i < g.ow) out_cols[4 * (t / 16) + i] |= bit;
      }
    }
  }
  conv::TileSet set() const {
    return {in_off.data(), in_rows.data(), in_cols.data(), out_off.data(), out_rows.data(), out_cols.data(),
            in_off.size()};
  }
};

// Whether every element offset of the input and the output fits the gathers' int32 lanes.
bool offsets_fit(const ConvGeometry& g) {
  constexpr size_t kMax = size_t{1} << 31;
  return g.n * g.c * g.h * g.w < kMax && g.n * g.o * g.oh * g.ow < kMax;
}

}  // namespace

namespace {
std::atomic<bool> g_winograd_allowed{true};
}  // namespace

bool all_finite(const float* p, std::size_t n) {
  constexpr std::size_t kRun = std::size_t{1} << 16;
  const std::size_t runs = (n + kRun - 1) / kRun;
  std::vector<unsigned char> bad(std::max<std::size_t>(runs, 1), 0);
  parallel_for(runs, [&](std::size_t first, std::size_t last) {
    for (std::size_t r = first; r < last; ++r) {
      const float* q = p + r * kRun;
      const std::size_t m = std::min(kRun, n - r * kRun);
      std::uint32_t special = 0;
      for (std::size_t i = 0; i < m; ++i) {
        std::uint32_t bits;
        std::memcpy(&bits, q + i, sizeof bits);
        special |= static_cast<std::uint32_t>((~bits & 0x7f800000u) == 0);
      }
      bad[r] = special != 0;
    }
  });
  return std::none_of(bad.begin(), bad.end(), [](unsigned char b) { return b != 0; });
}


void set_winograd_allowed(bool allowed) { g_winograd_allowed.store(allowed, std::memory_order_relaxed); }
bool winograd_allowed() { return g_winograd_allowed.load(std::memory_order_relaxed); }

bool winograd_applies(const ConvGeometry& g) {
  if (!winograd_allowed() || active_isa() != Isa::avx512) return false;
  if (g.kh != 3 || g.kw != 3 || g.sh != 1 || g.sw != 1 || g.dh != 1 || g.dw != 1 || g.groups != 1) return false;
  if (g.n == 0 || g.oh == 0 || g.ow == 0) return false;
  return g.c >= 16 && g.o >= 16 && kXi * g.c * g.o * sizeof(float) <= kMaxFilterBytes;
}

namespace {

// w (O x C 3x3 filters) -> the 36 GEMM A operands U[xi] (O x C), packed.
std::shared_ptr<WinogradFilters> transform_filters(const ConvGeometry& g, const float* w) {
  auto f = std::make_shared<WinogradFilters>();
  const size_t nf = g.o * g.c;
  f->finite = all_finite(w, nf * 9);
  if (!f->finite) return f;
  // U[xi] (O x C, row-major) holds G g G^T of filter (o, c) at o * C + c.
  ScratchBuffer u_buf = acquire_scratch(kXi * nf * sizeof(float));
  float* const u = u_buf.as<float>();
  constexpr size_t kFiltersPerTask = 1024;
  parallel_for(ceil_div(nf, kFiltersPerTask), [&](size_t first, size_t last) {
    const size_t p0 = first * kFiltersPerTask, p1 = std::min(nf, last * kFiltersPerTask);
    kFilter(w + p0 * 9, p1 - p0, u + p0, nf);
  });
  f->u.resize(kXi);
  parallel_for(kXi, [&](size_t first, size_t last) {
    for (size_t xi = first; xi < last; ++xi) {
      f->u[xi] = std::make_unique<gemm::PreparedA<float>>(gemm::row_major(u + xi * nf, g.c), g.o, g.c, Isa::avx512);
    }
  });
  return f;
}

std::shared_ptr<const WinogradFilters> cached_filters(const ConvGeometry& g, const float* w, std::uint64_t kind,
                                                      const std::function<std::shared_ptr<WinogradFilters>()>& build) {
  WeightKey key;
  key.data = w;
  key.bytes = g.o * g.c * 9 * sizeof(float);
  key.params = {kind, g.o, g.c};
  return cached_weight_as<WinogradFilters>(key, [&] {
    std::shared_ptr<WinogradFilters> f = build();
    size_t bytes = 0;
    for (const auto& a : f->u) bytes += a->bytes();
    return Derived{f, bytes};
  });
}

}  // namespace

std::shared_ptr<const WinogradFilters> winograd_filters(const ConvGeometry& g, const float* w) {
  return cached_filters(g, w, 0x57494e4f31ull, [&] { return transform_filters(g, w); });
}

std::shared_ptr<const WinogradFilters> winograd_grad_input_filters(const ConvGeometry& g, const float* w) {
  // w'[c][o] = w[o][c] rotated by 180 degrees; the key is the forward weight w.
  return cached_filters(g, w, 0x57494e4f32ull, [&] {
    ScratchBuffer wt_buf = acquire_scratch(g.o * g.c * 9 * sizeof(float));
    float* const wt = wt_buf.as<float>();
    parallel_for(g.c, [&](size_t c0, size_t c1) {
      for (size_t c = c0; c < c1; ++c) {
        for (size_t o = 0; o < g.o; ++o) {
          const float* src = w + (o * g.c + c) * 9;
          float* dst = wt + (c * g.o + o) * 9;
          for (size_t k = 0; k < 9; ++k) dst[k] = src[8 - k];
        }
      }
    });
    return transform_filters(grad_input_geometry(g), wt);
  });
}

void conv2d_winograd(const ConvGeometry& g, const float* x, const WinogradFilters& f, const float* bias,
                     const float* residual, bool relu, float* out) {
  const size_t tw = ceil_div(g.ow, 4), th = ceil_div(g.oh, 4), tile_rows = g.n * th;
  const size_t threads = static_cast<size_t>(get_num_threads());

  // Blocks of consecutive tiles (cutting across tile rows and images), a
  // multiple of the GEMM's 32-column panels so that no panel runs half empty.
  const size_t tiles_total = tile_rows * tw;
  const size_t tile_bytes = kXi * (g.c + g.o) * sizeof(float);
  const size_t block_cap = std::max<size_t>(kPanel, kBlockBytes / tile_bytes / kPanel * kPanel);
  const size_t per_thread = ceil_div(ceil_div(tiles_total, threads), kPanel) * kPanel;
  const size_t block_tiles = std::min(block_cap, per_thread);
  const size_t n_blocks = ceil_div(tiles_total, block_tiles);
  const size_t scratch_floats = kXi * (g.c + g.o) * block_tiles;
  const size_t b_floats = f.u[0]->scratch_elements(block_tiles);
  const auto h = static_cast<ptrdiff_t>(g.h), pt = static_cast<ptrdiff_t>(g.pt);
  const bool gather = tw <= kGatherMaxTilesPerRow && offsets_fit(g);

  // One block: input transform, 36 GEMMs, output transform, in scratch v.
  // Each phase is a parallel_for over its own dimension (channels, xi, output
  // channels): inline when the blocks are already split over the threads,
  // over every thread when one block is all there is (C7: 32 tiles).
  const auto run_block = [&](size_t blk, float* v) {
    const size_t b0 = blk * block_tiles, b1 = std::min(tiles_total, b0 + block_tiles), tiles = b1 - b0;
    float* const m = v + kXi * g.c * tiles;
    std::optional<BlockTiles> set;
    if (gather) set.emplace(g, tw, th, b0, b1);
    // input transform: V[xi] (C x tiles), 16 tiles of any rows at a time (small planes) or
    // one segment of a tile row at a time
    auto input_rows = [&](size_t c0, size_t c1) {
      for (size_t s = b0; s < b1;) {
        const size_t q = s / tw, tx0 = s % tw, nt = std::min(tw - tx0, b1 - s);
        const size_t n = q / th, ty = q % th;
        for (size_t c = c0; c < c1; ++c) {
          const float* plane = x + (n * g.c + c) * g.h * g.w;
          const float* rows[6];
          for (size_t r = 0; r < 6; ++r) {
            const ptrdiff_t iy = static_cast<ptrdiff_t>(4 * ty + r) - pt;
            rows[r] = iy < 0 || iy >= h ? nullptr : plane + static_cast<size_t>(iy) * g.w;
          }
          kInput(rows, static_cast<ptrdiff_t>(4 * tx0) - static_cast<ptrdiff_t>(g.pl), g.w, nt,
                 v + c * tiles + (s - b0), g.c * tiles);
        }
        s += nt;
      }
    };
    if (gather) {
      parallel_for(g.c, [&](size_t c0, size_t c1) {
        const conv::TileSet ts = set->set();
        for (size_t c = c0; c < c1; ++c) kInputGather(x + c * g.h * g.w, ts, g.w, v + c * tiles, g.c * tiles);
      });
    } else {
      parallel_for(g.c, input_rows);
    }
    // M[xi] (O x tiles) = U[xi] (O x C) V[xi] (C x tiles)
    parallel_for(kXi, [&](size_t first, size_t last) {
      ScratchBuffer b_buf = acquire_scratch(b_floats * sizeof(float));
      for (size_t xi = first; xi < last; ++xi) {
        f.u[xi]->multiply(tiles, gemm::row_major(v + xi * g.c * tiles, tiles), m + xi * g.o * tiles, tiles, 1.0f,
                          0.0f, nullptr, b_buf.as<float>());
      }
    });
    // output transform + epilogue
    auto output_rows = [&](size_t o0, size_t o1) {
      for (size_t s = b0; s < b1;) {
        const size_t q = s / tw, tx0 = s % tw, nt = std::min(tw - tx0, b1 - s);
        const size_t n = q / th, ty = q % th;
        const size_t nrows = std::min<size_t>(4, g.oh - 4 * ty), cols = std::min(g.ow - 4 * tx0, 4 * nt);
        for (size_t o = o0; o < o1; ++o) {
          const size_t at = ((n * g.o + o) * g.oh + 4 * ty) * g.ow + 4 * tx0;
          kOutput(m + o * tiles + (s - b0), g.o * tiles, nt, nrows, cols, bias != nullptr ? bias[o] : 0.0f,
                  residual != nullptr ? residual + at : nullptr, relu, out + at, g.ow);
        }
        s += nt;
      }
    };
    if (gather) {
      parallel_for(g.o, [&](size_t o0, size_t o1) {
        const conv::TileSet ts = set->set();
        for (size_t o = o0; o < o1; ++o) {
          const size_t plane = o * g.oh * g.ow;
          kOutputScatter(m + o * tiles, g.o * tiles, ts, g.ow, bias != nullptr ? bias[o] : 0.0f,
                         residual != nullptr ? residual + plane : nullptr, relu, out + plane);
        }
      });
    } else {
      parallel_for(g.o, output_rows);
    }
  };
  // Enough blocks for every thread: one thread per block, its phases inline.
  // Otherwise the blocks run here one by one, each phase over every thread.
  if (n_blocks >= threads) {
    parallel_for(n_blocks, [&](size_t first, size_t last) {
      ScratchBuffer scratch = acquire_scratch(scratch_floats * sizeof(float));
      for (size_t blk = first; blk < last; ++blk) run_block(blk, scratch.as<float>());
    });
  } else {
    ScratchBuffer scratch = acquire_scratch(scratch_floats * sizeof(float));
    for (size_t blk = 0; blk < n_blocks; ++blk) run_block(blk, scratch.as<float>());
  }
}

}  // namespace nnkern::ops

namespace nnkern::ops {

bool winograd_grad_input_applies(const ConvGeometry& g) {
  return g.pt <= 2 && g.pl <= 2 && winograd_applies(grad_input_geometry(g));
}

ConvGeometry grad_input_geometry(const ConvGeometry& g) {
  ConvGeometry b = g;
  b.c = g.o;
  b.h = g.oh;
  b.w = g.ow;
  b.o = g.c;
  b.oh = g.h;
  b.ow = g.w;
  b.pt = 2 - std::min<size_t>(g.pt, 2);
  b.pl = 2 - std::min<size_t>(g.pl, 2);
  return b;
}

}  // namespace nnkern::ops
