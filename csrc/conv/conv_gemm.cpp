// conv2d as a GEMM of the packed weight (PreparedA, from the weight cache) by
// tiles of output pixels: an im2col tile of columns, or the input planes
// themselves for a 1x1 stride-1 unpadded conv; the backward the same way
// (grad_weight over im2col tiles, grad_input through col2im). Also the im2col
// geometry the pixel-rows family shares (runs_of, Tap; conv_plan.h).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "conv/conv_plan.h"
#include "core/dispatch.h"
#include "core/thread_pool.h"
#include "core/weight_cache.h"
#include "gemm/gemm.h"

namespace nnkern::ops::detail {

// At least this many output pixels per GEMM: each call packs the weight
// (O x K) again, which below ~256 columns costs as much as the arithmetic.
constexpr size_t kMinTileCols = 256;

namespace {

// The output positions [lo, hi) within [0, out_len) whose input position
// o * s + off lies inside [0, len).
void valid_range(ptrdiff_t off, ptrdiff_t s, ptrdiff_t len, ptrdiff_t out_len, ptrdiff_t& lo, ptrdiff_t& hi) {
  lo = off >= 0 ? 0 : (-off + s - 1) / s;
  hi = len - 1 - off < 0 ? 0 : (len - 1 - off) / s + 1;
  hi = std::min(hi, out_len);
  lo = std::min(lo, hi);
}

}  // namespace

std::vector<Run> runs_of(const Plan& pl, size_t q0, size_t q1) {
  std::vector<Run> runs;
  runs.reserve((q1 - q0) / pl.g.ow + 2);
  for (size_t q = q0; q < q1;) {
    const size_t n = q / pl.p, pix = q % pl.p, ox0 = pix % pl.g.ow;
    const size_t ox1 = std::min(pl.g.ow, ox0 + (q1 - q));
    runs.push_back({n, pix / pl.g.ow, static_cast<ptrdiff_t>(ox0), static_cast<ptrdiff_t>(ox1), q - q0});
    q += ox1 - ox0;
  }
  return runs;
}

Tap::Tap(const ConvGeometry& g, size_t r) {
  const size_t taps = g.kh * g.kw;
  c = r / taps;
  row_off = static_cast<ptrdiff_t>(r / g.kw % g.kh * g.dh) - static_cast<ptrdiff_t>(g.pt);
  off_x = static_cast<ptrdiff_t>(r % g.kw * g.dw) - static_cast<ptrdiff_t>(g.pl);
  valid_range(off_x, static_cast<ptrdiff_t>(g.sw), static_cast<ptrdiff_t>(g.w), static_cast<ptrdiff_t>(g.ow), lo_x,
              hi_x);
}

namespace {

// Rows [r0, r1) of group grp's column matrix for the global output pixels
// [q0, q1) (q = n * P + pixel; a tile may span images), into dst with leading
// dimension q1 - q0. Padding reads as zero.
template <class T>
void im2col(const Plan& pl, const T* x, size_t grp, size_t r0, size_t r1, size_t q0, size_t q1, T* dst) {
  const ConvGeometry& g = pl.g;
  const size_t cols = q1 - q0;
  const auto sw = static_cast<ptrdiff_t>(g.sw), h = static_cast<ptrdiff_t>(g.h);
  const std::vector<Run> runs = runs_of(pl, q0, q1);
  for (size_t r = r0; r < r1; ++r) {
    const Tap tap(g, r);
    T* const drow = dst + (r - r0) * cols;
    for (const Run& run : runs) {
      T* const d = drow + run.at;  // holds ox = run.ox0 ...
      const ptrdiff_t len = run.ox1 - run.ox0;
      const ptrdiff_t iy = static_cast<ptrdiff_t>(run.oy * g.sh) + tap.row_off;
      if (iy < 0 || iy >= h) {
        std::fill(d, d + len, T(0));
        continue;
      }
      const T* row = x + ((run.n * g.c + grp * pl.cg + tap.c) * g.h + static_cast<size_t>(iy)) * g.w;
      const ptrdiff_t a = std::clamp(tap.lo_x, run.ox0, run.ox1) - run.ox0;
      const ptrdiff_t b = std::clamp(tap.hi_x - run.ox0, a, len);
      const T* src = row + (run.ox0 + a) * sw + tap.off_x;  // valid: a is inside the input row
      std::fill(d, d + a, T(0));
      if (sw == 1) {
        std::memcpy(d + a, src, static_cast<size_t>(b - a) * sizeof(T));
      } else if (sw == 2) {
        // a constant stride: the compiler deinterleaves with vector shuffles
        T* __restrict dst = d + a;
        for (ptrdiff_t i = 0; i < b - a; ++i) dst[i] = src[2 * i];
      } else {
        for (ptrdiff_t i = 0; i < b - a; ++i) d[a + i] = src[i * sw];
      }
      std::fill(d + b, d + len, T(0));
    }
  }
}

// gx[n, group grp] += the column gradient gcols (k x (p1 - p0), pixels
// [p0, p1) of image n): each column entry goes back to the input pixel it was
// read from, in a fixed order.
template <class T>
void col2im(const Plan& pl, const T* gcols, size_t n, size_t grp, size_t p0, size_t p1, T* gx) {
  const ConvGeometry& g = pl.g;
  const size_t cols = p1 - p0;
  const auto sw = static_cast<ptrdiff_t>(g.sw), h = static_cast<ptrdiff_t>(g.h);
  const std::vector<Run> runs = runs_of(pl, n * pl.p + p0, n * pl.p + p1);
  for (size_t r = 0; r < pl.k; ++r) {
    const Tap tap(g, r);
    const T* const srow = gcols + r * cols;
    for (const Run& run : runs) {
      const ptrdiff_t iy = static_cast<ptrdiff_t>(run.oy * g.sh) + tap.row_off;
      if (iy < 0 || iy >= h) continue;
      const ptrdiff_t a = std::clamp(tap.lo_x, run.ox0, run.ox1), b = std::clamp(tap.hi_x, a, run.ox1);
      if (a == b) continue;
      const T* s = srow + run.at + (a - run.ox0);
      T* dst = gx + ((n * g.c + grp * pl.cg + tap.c) * g.h + static_cast<size_t>(iy)) * g.w + (a * sw + tap.off_x);
      for (ptrdiff_t i = 0; i < b - a; ++i) dst[i * sw] += s[i];
    }
  }
}

// out[n, o0 + r, pixel] = act(src[r, q - q0] + residual) for the global pixels
// [q0, q1); src (the GEMM's result, its bias added) may be the output itself
// (in place).
template <class T>
void epilogue(const Plan& pl, const T* src, size_t ld_src, size_t rows, size_t o0, size_t q0, size_t q1,
              const T* residual, bool relu, T* out) {
  for (size_t r = 0; r < rows; ++r) {
    const size_t o = o0 + r;
    const T* s = src + r * ld_src;
    for (size_t q = q0; q < q1;) {
      const size_t n = q / pl.p, pix = q % pl.p, len = std::min(pl.p - pix, q1 - q);
      const size_t at = (n * pl.g.o + o) * pl.p + pix;
      T* d = out + at;
      if (d != s) std::memcpy(d, s, len * sizeof(T));
      if (residual != nullptr) {
        const T* res = residual + at;
        for (size_t i = 0; i < len; ++i) d[i] += res[i];
      }
      if (relu) {
        // NaN fails the compare and passes through, as torch.relu
        for (size_t i = 0; i < len; ++i) d[i] = d[i] < T(0) ? T(0) : d[i];
      }
      s += len;
      q += len;
    }
  }
}

// Kinds of data derived from a convolution weight (WeightKey.params[0]).
enum class Derivation : std::uint64_t { gemm_a = 1, gemm_a_transposed = 2 };

// The weight of every group as a GEMM A operand (og x k, or its transpose
// k x og), packed once and kept in the weight cache (core/weight_cache.h).
template <class T>
struct PackedGroups {
  std::vector<std::unique_ptr<gemm::PreparedA<T>>> groups;
};

template <class T>
std::shared_ptr<const PackedGroups<T>> packed_groups(const Plan& pl, const T* w, Derivation kind) {
  const ConvGeometry& g = pl.g;
  WeightKey key;
  key.data = w;
  key.bytes = g.o * pl.k * sizeof(T);
  key.params = {static_cast<std::uint64_t>(kind), sizeof(T), static_cast<std::uint64_t>(active_isa()), g.o, pl.cg,
                g.kh, g.kw, g.groups};
  return cached_weight_as<PackedGroups<T>>(key, [&] {
    auto packed = std::make_shared<PackedGroups<T>>();
    packed->groups.resize(g.groups);
    std::size_t bytes = 0;
    for (size_t grp = 0; grp < g.groups; ++grp) {
      const T* wg = w + grp * pl.og * pl.k;
      packed->groups[grp] = kind == Derivation::gemm_a
                                ? std::make_unique<gemm::PreparedA<T>>(gemm::row_major(wg, pl.k), pl.og, pl.k,
                                                                       active_isa())
                                : std::make_unique<gemm::PreparedA<T>>(gemm::row_major(wg, pl.k, true), pl.k,
                                                                       pl.og, active_isa());
      bytes += packed->groups[grp]->bytes();
    }
    return Derived{packed, bytes};
  });
}

}  // namespace

template <class T>
void conv2d_gemm(const Plan& pl, const T* x, const T* w, const T* bias, const T* residual, bool relu, T* out) {
  const ConvGeometry& g = pl.g;
  const size_t total = g.n * pl.p;
  if (total == 0 || g.o == 0) return;
  const auto packed = packed_groups(pl, w, Derivation::gemm_a);
  // Tiles of output pixels, balanced so that every thread gets the same
  // number: planes of at least a tile are cut into equal tiles inside each
  // image (a 1x1 conv then multiplies the input planes in place, and the
  // GEMM writes the output planes); smaller planes share tiles across images.
  const size_t threads = static_cast<size_t>(get_num_threads());
  const size_t tile_target = std::max(kMinTileCols, kTileBytes / (pl.k * sizeof(T)));
  size_t n_tiles = ceil_div(total, tile_target);
  if (pl.p >= tile_target) n_tiles = g.n * ceil_div(pl.p, tile_target);
  if (g.groups * n_tiles < threads * 8) n_tiles = std::min(total, ceil_div(n_tiles, threads) * threads);
  const size_t per_image = n_tiles % g.n == 0 ? n_tiles / g.n : 0;  // tiles inside images, or 0
  // Tiles across images start on multiples of the widest B panel, so that
  // only the last tile has a partial panel (C4: 8 tiles of 196 columns ran
  // 7 panels each, 28 per thread; aligned, 25 and 24).
  constexpr size_t kPanelAlign = 32;
  const auto tile_start = [&](size_t tile) {
    const size_t q = tile * total / n_tiles;
    return tile == n_tiles ? total : std::min(total, (q + kPanelAlign / 2) / kPanelAlign * kPanelAlign);
  };
  const size_t max_cols = per_image != 0 ? ceil_div(pl.p, per_image) : ceil_div(total, n_tiles) + kPanelAlign;
  // B's packed block (first: the kernels want it 64-byte aligned), the
  // columns (k x tile), then the GEMM result of a tile that spans images (og x tile)
  const size_t b_elems = packed->groups[0]->scratch_elements(max_cols);
  const size_t scratch_bytes = (b_elems + (pl.k + pl.og) * max_cols) * sizeof(T);
  run_tasks(g.groups * n_tiles, scratch_bytes, [&](size_t t, void* scratch) {
    const size_t grp = t / n_tiles, tile = t % n_tiles;
    size_t q0 = tile_start(tile), q1 = tile_start(tile + 1);
    if (per_image != 0) {
      const size_t n = tile / per_image, i = tile % per_image;
      q0 = n * pl.p + i * pl.p / per_image;
      q1 = n * pl.p + (i + 1) * pl.p / per_image;
    }
    const size_t cols = q1 - q0;
    if (cols == 0) return;  // aligned starts can leave a tiny tile empty
    T* const b_buf = static_cast<T*>(scratch);
    T* const col_buf = b_buf + b_elems;
    T* const c_buf = col_buf + pl.k * max_cols;
    const size_t n0 = q0 / pl.p;
    const bool one_image = n0 == (q1 - 1) / pl.p;
    gemm::MatrixRef<T> b;
    gemm::BSource source = gemm::BSource::resident;
    if (pl.direct_1x1 && one_image) {
      b = gemm::row_major(x + (n0 * g.c + grp * pl.cg) * pl.hw + q0 % pl.p, pl.hw);
      source = gemm::BSource::streamed;
    } else {
      im2col(pl, x, grp, 0, pl.k, q0, q1, col_buf);
      b = gemm::row_major(col_buf, cols);
    }
    T* c = c_buf;
    size_t ldc = cols;
    if (one_image) {
      c = out + (n0 * g.o + grp * pl.og) * pl.p + q0 % pl.p;
      ldc = pl.p;
    }
    // the bias added by the GEMM (in the kernels' stores where it reads B in place), the rest after
    packed->groups[grp]->multiply(cols, b, c, ldc, T(1), T(0), nullptr, b_buf, source,
                                  bias != nullptr ? bias + grp * pl.og : nullptr);
    if (!one_image || residual != nullptr || relu) {
      epilogue(pl, c, ldc, pl.og, grp * pl.og, q0, q1, residual, relu, out);
    }
  });
}

// ---- GEMM-based backward: grad_weight over im2col tiles, grad_input through col2im

// grad_weight[grp] (og x k) = sum over pixel tiles, in order, of
// grad_out tile (og x cols) @ columns tile^T (cols x k). The tiles depend only
// on the shape, and the threads split the k columns of grad_weight (each task
// builds only its rows of the columns), so every element is the same chain of
// GEMM accumulations whatever the thread count: the same bits for any count.
template <class T>
void grad_weight_typed(const Plan& pl, const T* go, const T* x, T* gw) {
  const ConvGeometry& g = pl.g;
  const size_t total = g.n * pl.p;
  if (total == 0) {
    std::fill_n(gw, g.o * pl.k, T(0));
    return;
  }
  const size_t threads = static_cast<size_t>(get_num_threads());
  const size_t tile = std::min(total, std::max(kMinTileCols, kTileBytes / (pl.k * sizeof(T))));
  const size_t n_tiles = ceil_div(total, tile);
  // at least 32 rows per task: each task packs the grad_out tile again
  const size_t row_blocks = std::max<size_t>(1, std::min(threads, pl.k / 32));
  const size_t max_rows = ceil_div(pl.k, row_blocks);
  const size_t scratch_bytes = (max_rows + pl.og) * tile * sizeof(T);
  run_tasks(g.groups * row_blocks, scratch_bytes, [&](size_t t, void* scratch) {
    const size_t grp = t / row_blocks, blk = t % row_blocks;
    const size_t r0 = blk * pl.k / row_blocks, r1 = (blk + 1) * pl.k / row_blocks, rows = r1 - r0;
    T* const col_buf = static_cast<T*>(scratch);
    T* const go_buf = col_buf + max_rows * tile;
    for (size_t ti = 0; ti < n_tiles; ++ti) {
      const size_t q0 = ti * tile, q1 = std::min(total, q0 + tile), cols = q1 - q0;
      const size_t n0 = q0 / pl.p;
      gemm::GemmArgs<T> a;
      a.m = pl.og;
      a.n = rows;
      a.k = cols;
      if (n0 == (q1 - 1) / pl.p) {
        a.a = gemm::row_major(go + (n0 * g.o + grp * pl.og) * pl.p + q0 % pl.p, pl.p);
      } else {
        // a tile spanning images: gather its grad_out rows into one matrix
        for (size_t r = 0; r < pl.og; ++r) {
          T* d = go_buf + r * cols;
          for (size_t q = q0; q < q1;) {
            const size_t n = q / pl.p, pix = q % pl.p, len = std::min(pl.p - pix, q1 - q);
            std::memcpy(d, go + (n * g.o + grp * pl.og + r) * pl.p + pix, len * sizeof(T));
            d += len;
            q += len;
          }
        }
        a.a = gemm::row_major(go_buf, cols);
      }
      if (pl.direct_1x1 && n0 == (q1 - 1) / pl.p) {
        a.b = gemm::row_major(x + (n0 * g.c + grp * pl.cg + r0) * pl.hw + q0 % pl.p, pl.hw, true);
      } else {
        im2col(pl, x, grp, r0, r1, q0, q1, col_buf);
        a.b = gemm::row_major(col_buf, cols, true);
      }
      a.beta = ti == 0 ? T(0) : T(1);
      a.c = gw + grp * pl.og * pl.k + r0;
      a.ldc = pl.k;
      gemm::gemm(a);
    }
  });
}

// grad_input[n, grp] = col2im(weight[grp]^T @ grad_out[n, grp]), tile by tile
// in pixel order; images and groups are independent tasks (disjoint outputs).
// For a 1x1 stride-1 unpadded conv the GEMM writes the gradient directly.
template <class T>
void grad_input_typed(const Plan& pl, const T* go, const T* w, T* gx) {
  const ConvGeometry& g = pl.g;
  const size_t tile = pl.p == 0 ? 1 : std::min(pl.p, std::max<size_t>(64, kTileBytes / (pl.k * sizeof(T))));
  const size_t n_tiles = pl.p == 0 ? 0 : ceil_div(pl.p, tile);
  run_tasks(g.n * g.groups, pl.k * tile * sizeof(T), [&](size_t t, void* scratch) {
    const size_t n = t / g.groups, grp = t % g.groups;
    T* const plane = gx + (n * g.c + grp * pl.cg) * pl.hw;
    const T* const go_g = go + (n * g.o + grp * pl.og) * pl.p;
    gemm::GemmArgs<T> a;
    a.m = pl.k;
    a.k = pl.og;
    a.a = gemm::row_major(w + grp * pl.og * pl.k, pl.k, true);
    if (pl.direct_1x1) {
      a.n = pl.p;
      a.b = gemm::row_major(go_g, pl.p);
      a.c = plane;
      a.ldc = pl.hw;
      gemm::gemm(a);
      return;
    }
    std::fill_n(plane, pl.cg * pl.hw, T(0));
    T* const gcols = static_cast<T*>(scratch);
    for (size_t ti = 0; ti < n_tiles; ++ti) {
      const size_t p0 = ti * tile, p1 = std::min(pl.p, p0 + tile);
      a.n = p1 - p0;
      a.b = gemm::row_major(go_g + p0, pl.p);
      a.c = gcols;
      a.ldc = p1 - p0;
      gemm::gemm(a);
      col2im(pl, gcols, n, grp, p0, p1, gx);
    }
  });
}

template void conv2d_gemm(const Plan&, const float*, const float*, const float*, const float*, bool, float*);
template void conv2d_gemm(const Plan&, const double*, const double*, const double*, const double*, bool, double*);
template void grad_weight_typed(const Plan&, const float*, const float*, float*);
template void grad_weight_typed(const Plan&, const double*, const double*, double*);
template void grad_input_typed(const Plan&, const float*, const float*, float*);
template void grad_input_typed(const Plan&, const double*, const double*, double*);

}  // namespace nnkern::ops::detail
