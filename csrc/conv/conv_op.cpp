#include "conv/conv_op.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#include "conv/direct.h"
#include "conv/dw3x3.h"
#include "conv/dwconv.h"
#include "conv/im2col_panels.h"
#include "conv/image_lanes.h"
#include "conv/wgrad_taps.h"
#include "conv/winograd_op.h"
#include "core/dispatch.h"
#include "core/thread_pool.h"
#include "core/weight_cache.h"
#include "core/workspace.h"
#include "gemm/gemm.h"
#include "gemm/gemm_ukernel.h"
#include "norm/bn_kernels.h"

namespace nnkern::ops {
namespace {

using std::ptrdiff_t;
using std::size_t;

// im2col tiles hold about this many bytes of columns: with the GEMM's packed
// copy of the same tile they stay inside one core's 2 MiB L2.
constexpr size_t kTileBytes = size_t{1} << 20;
// At least this many output pixels per GEMM: each call packs the weight
// (O x K) again, which below ~256 columns costs as much as the arithmetic.
constexpr size_t kMinTileCols = 256;
// im2col_panels fetches the input planes this many channels ahead (measured on
// C4 at one thread: 2 ~2-4% faster than none, bench/notes_conv_session6.md).
constexpr size_t kIm2colAhead = 2;

size_t ceil_div(size_t a, size_t b) { return (a + b - 1) / b; }


// Derived sizes of one convolution.
struct Plan {
  const ConvGeometry& g;
  size_t cg, og;      // channels per group in / out
  size_t k;           // GEMM depth: cg * kh * kw
  size_t hw, p;       // input / output pixels per plane
  bool direct_1x1;    // 1x1, stride 1, no padding: the input plane is the column matrix
  explicit Plan(const ConvGeometry& geo)
      : g(geo), cg(geo.c / geo.groups), og(geo.o / geo.groups), k(cg * geo.kh * geo.kw), hw(geo.h * geo.w),
        p(geo.oh * geo.ow),
        direct_1x1(geo.kh == 1 && geo.kw == 1 && geo.sh == 1 && geo.sw == 1 && geo.pt == 0 && geo.pl == 0 &&
                   geo.oh == geo.h && geo.ow == geo.w) {}
};

// The output positions [lo, hi) within [0, out_len) whose input position
// o * s + off lies inside [0, len).
void valid_range(ptrdiff_t off, ptrdiff_t s, ptrdiff_t len, ptrdiff_t out_len, ptrdiff_t& lo, ptrdiff_t& hi) {
  lo = off >= 0 ? 0 : (-off + s - 1) / s;
  hi = len - 1 - off < 0 ? 0 : (len - 1 - off) / s + 1;
  hi = std::min(hi, out_len);
  lo = std::min(lo, hi);
}

// A run of output pixels [ox0, ox1) on output row oy of image n, starting at
// column `at` of a tile. Tiles are cut into runs once, so the per-row loops of
// im2col / col2im do no divisions.
struct Run {
  size_t n, oy;
  ptrdiff_t ox0, ox1;
  size_t at;
};

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

// Row r = (c, i, j) of the columns (weight order) reads input row
// oy*sh + i*dh - pt, columns ox*sw + off_x for ox in [lo_x, hi_x).
struct Tap {
  size_t c;
  ptrdiff_t row_off, off_x, lo_x, hi_x;
  Tap(const ConvGeometry& g, size_t r) {
    const size_t taps = g.kh * g.kw;
    c = r / taps;
    row_off = static_cast<ptrdiff_t>(r / g.kw % g.kh * g.dh) - static_cast<ptrdiff_t>(g.pt);
    off_x = static_cast<ptrdiff_t>(r % g.kw * g.dw) - static_cast<ptrdiff_t>(g.pl);
    valid_range(off_x, static_cast<ptrdiff_t>(g.sw), static_cast<ptrdiff_t>(g.w), static_cast<ptrdiff_t>(g.ow), lo_x,
                hi_x);
  }
};

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

// out[n, o0 + r, pixel] = act(src[r, q - q0] + bias + residual) for the global
// pixels [q0, q1); src may be the output itself (in place).
template <class T>
void epilogue(const Plan& pl, const T* src, size_t ld_src, size_t rows, size_t o0, size_t q0, size_t q1,
              const T* bias, const T* residual, bool relu, T* out) {
  for (size_t r = 0; r < rows; ++r) {
    const size_t o = o0 + r;
    const T* s = src + r * ld_src;
    for (size_t q = q0; q < q1;) {
      const size_t n = q / pl.p, pix = q % pl.p, len = std::min(pl.p - pix, q1 - q);
      const size_t at = (n * pl.g.o + o) * pl.p + pix;
      T* d = out + at;
      if (bias != nullptr) {
        const T b = bias[o];
        for (size_t i = 0; i < len; ++i) d[i] = s[i] + b;
      } else if (d != s) {
        std::memcpy(d, s, len * sizeof(T));
      }
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

// Runs task(t, scratch) for t in [0, tasks): split over the pool when there
// are enough tasks to feed every thread (GEMMs inside then run inline), else
// one after the other on this thread, each GEMM threading over its own tiles.
template <class Task>
void run_tasks(size_t tasks, size_t scratch_bytes, const Task& task) {
  if (tasks == 0) return;
  if (tasks >= static_cast<size_t>(get_num_threads())) {
    parallel_for(tasks, [&](size_t first, size_t last) {
      ScratchBuffer scratch = acquire_scratch(scratch_bytes);
      for (size_t t = first; t < last; ++t) task(t, scratch.data());
    });
  } else {
    ScratchBuffer scratch = acquire_scratch(scratch_bytes);
    for (size_t t = 0; t < tasks; ++t) task(t, scratch.data());
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
    packed->groups[grp]->multiply(cols, b, c, ldc, T(1), T(0), nullptr, b_buf, source);
    epilogue(pl, c, ldc, pl.og, grp * pl.og, q0, q1, bias, residual, relu, out);
  });
}

// ---- pixel-rows GEMM: out^T (pixels x O) = patches (pixels x K) @ W^T (K x O)
//
// The transposed formulation of conv2d_gemm, for shapes whose pixel count
// fits the column panels badly (C4: 196 pixels per image = 6 panels of 32 and
// a 4-wide one, 87.5% of the kernel's columns used): here the pixels are the
// GEMM's rows (tiles of 14 on the AVX-512 kernel: 196 = 14 x 14) and the
// output channels its columns (256 = 8 x 32), so every tile is full. The
// patches are written straight into packed A panels (no column matrix, no
// packing pass; conv/im2col_panels.h), W^T is packed once (weight cache), the
// bias is added by the GEMM, and the result is transposed to NCHW with the
// residual and relu. Float32 on the AVX-512 family only (pixel_rows_applies).

// The AVX-512 float32 kernel's tile: 14 rows (pixels) x 32 columns (channels).
constexpr size_t kPixelRowsMr = 14, kPixelRowsNr = 32;
// Elements between consecutive row tiles of a packed slice beyond the tile
// itself: without them the tiles lie 14 * 512 floats = 7 x 4 KiB apart, and
// im2col, which writes the same tap row of every tile in turn, stores into
// the same few L1 sets (measured: im2col ~2x slower, bench/notes_conv_session6.md).
constexpr size_t kPixelRowsTilePad = 16;

// Shapes the pixel-rows GEMM can take: float32 on the AVX-512 family, one
// group, not a 1x1 stride-1 conv (that one reads its input in place), output
// channels a multiple of the kernel's 32 columns. It takes them when the
// per-image pixel counts leave a partial column panel in conv2d_gemm
// (pixel_rows_applies), or when its implicit form fits the shape
// (pixel_rows_implicit_shape: no im2col at all; C3's stem 7.1 -> 5.0 ms, a
// 64 -> 64 3x3 on 56x56 planes 6.0 -> 5.0 ms at 2 threads, bench/NOTES.md).
template <class T>
bool pixel_rows_form_applies(const Plan& pl) {
  if constexpr (!std::is_same_v<T, float>) {
    return false;
  } else {
    const ConvGeometry& g = pl.g;
    return active_isa() == Isa::avx512 && g.groups == 1 && !pl.direct_1x1 && g.o % kPixelRowsNr == 0 &&
           pl.p >= kPixelRowsMr && pl.k >= 16;
  }
}
template <class T>
bool pixel_rows_applies(const Plan& pl) {
  return pixel_rows_form_applies<T>(pl) && pl.p % kPixelRowsNr != 0;
}

// Offsets of the packed patches of m pixels (im2col_panels.h layout, tiles
// kPixelRowsTilePad apart): slice pc starts at slice_start(pc), tile t of
// it at + t * tile_stride(kb).
struct PixelRowsLayout {
  size_t m, k, kc, tiles;
  PixelRowsLayout(size_t rows, size_t depth, size_t slice) : m(rows), k(depth), kc(slice), tiles(ceil_div(rows, kPixelRowsMr)) {}
  size_t tile_stride(size_t kb) const { return kPixelRowsMr * kb + kPixelRowsTilePad; }
  size_t slice_start(size_t pc) const { return pc * tiles * kPixelRowsMr + pc / kc * tiles * kPixelRowsTilePad; }
  size_t elements() const { return slice_start(k) + (k % kc != 0 ? tiles * kPixelRowsTilePad : 0); }
  // rows of tile t: balanced heights (m = 32: 11 + 11 + 10, not 14 + 14 + 4)
  size_t tile_rows(size_t t) const { return m / tiles + (t < m % tiles ? 1 : 0); }
};

// The tap rows of a convolution (weight order), precomputed once per call.
std::vector<conv::Im2colTap> im2col_taps(const Plan& pl) {
  std::vector<conv::Im2colTap> taps;
  taps.reserve(pl.k);
  for (size_t r = 0; r < pl.k; ++r) {
    const Tap t(pl.g, r);
    taps.push_back({t.row_off, t.off_x, t.lo_x, t.hi_x, t.c * pl.hw});
  }
  return taps;
}

// The patches of the global pixels [q0, q1) (q = n * P + pixel) into dst
// (layout lay), by the AVX-512 run copier.
void im2col_panels(const Plan& pl, const std::vector<conv::Im2colTap>& taps, const float* x, size_t q0, size_t q1,
                   const PixelRowsLayout& lay, float* dst) {
  const ConvGeometry& g = pl.g;
  std::vector<conv::Im2colRun> runs;
  for (size_t t = 0, ir = 0; t < lay.tiles; ++t) {
    const size_t rows = lay.tile_rows(t);
    for (const Run& r : runs_of(pl, q0 + ir, q0 + ir + rows)) {
      runs.push_back({r.n * g.c * pl.hw, t, r.at, static_cast<ptrdiff_t>(r.oy * g.sh), r.ox0, r.ox1});
    }
    ir += rows;
  }
  const size_t n0 = q0 / pl.p, n1 = (q1 - 1) / pl.p + 1;
  conv::Im2colPanels job{};
  job.x = x;
  job.h = g.h;
  job.w = g.w;
  job.sw = g.sw;
  job.taps = taps.data();
  job.k = pl.k;
  job.kc = lay.kc;
  job.mr = kPixelRowsMr;
  job.tiles = lay.tiles;
  job.tile_pad = kPixelRowsTilePad;
  job.runs = runs.data();
  job.n_runs = runs.size();
  job.dst = dst;
  job.taps_per_channel = g.kh * g.kw;
  job.plane = pl.hw;
  job.channels = pl.cg;
  job.image0 = n0;
  job.images = n1 - n0;
  job.image_stride = g.c * pl.hw;
  job.ahead = kIm2colAhead;
  job.kw = g.kw;
  // (compiled wherever pixel_rows_applies can be true: the AVX-512 family)
  constexpr void (*kIm2col)(const conv::Im2colPanels&) = NNKERN_X86_ONLY(conv::f32_im2col_panels_avx512);
  kIm2col(job);
}

// Where a row tile's results go: the first row's C element of column 0, the
// step between columns, and the kernel's ldc (the step between rows).
struct TileTarget {
  float* c;
  size_t column_step, ldc;
};

// A (im2col_panels) @ wt + bias with a 14x32 AVX-512 kernel: slice by slice,
// row tile by row tile, every column panel against the tile (its A panel
// stays in L1 while the packed W^T panels stream from L2). Each element: one
// FMA chain per slice, slices in ascending order. target(ir) places the row
// tile starting at row ir.
template <class Target>
void multiply_tiles(gemm::GemmUkernelFn<float> kernel, const gemm::PreparedB<float>& wt, const PixelRowsLayout& lay,
                    const float* a, const float* bias, const Target& target) {
  const size_t n = wt.padded_columns();
  const float* const packed = wt.panels();
  for (size_t pc = 0; pc < lay.k; pc += lay.kc) {
    const size_t kb = std::min(lay.kc, lay.k - pc);
    const float* const b_slice = packed + pc * n;
    const float* const a_slice = a + lay.slice_start(pc);
    const float beta = pc == 0 ? 0.0f : 1.0f;
    const float* const sbias = pc == 0 ? bias : nullptr;
    for (size_t t = 0, ir = 0; t < lay.tiles; ++t) {
      const size_t rows = lay.tile_rows(t);
      const TileTarget to = target(ir);
      for (size_t jr = 0; jr < n; jr += kPixelRowsNr) {
        kernel(rows, kPixelRowsNr, kb, a_slice + t * lay.tile_stride(kb), b_slice + jr * kb,
               to.c + jr * to.column_step, to.ldc, 1.0f, beta, sbias != nullptr ? sbias + jr : nullptr);
      }
      ir += rows;
    }
  }
}

// c (m x O, ldc) = A (im2col_panels) @ wt + bias.
void multiply_pixel_rows(const gemm::PreparedB<float>& wt, const PixelRowsLayout& lay, const float* a, float* c,
                         size_t ldc, const float* bias) {
  multiply_tiles(NNKERN_X86_ONLY(gemm::f32_gemm_14x32_avx512), wt, lay, a, bias,
                 [&](size_t ir) { return TileTarget{c + ir * ldc, 1, ldc}; });
}

// out (NCHW) = A (im2col_panels) @ wt + bias for the global pixels [q0, q1),
// each row tile inside one image (tiles_inside_images): the kernel stores
// its 14x32 tiles transposed, straight into the output planes (no result
// buffer, no transpose pass). The same FMA chains as multiply_pixel_rows.
void multiply_pixel_rows_into(const Plan& pl, const gemm::PreparedB<float>& wt, const PixelRowsLayout& lay,
                              const float* a, size_t q0, const float* bias, float* out) {
  multiply_tiles(NNKERN_X86_ONLY(gemm::f32_gemm_14x32_ct_avx512), wt, lay, a, bias, [&](size_t ir) {
    const size_t q = q0 + ir;
    return TileTarget{out + q / pl.p * pl.g.o * pl.p + q % pl.p, pl.p, pl.p};
  });
}

// Whether every row tile of the pixels [q0, q1) lies inside one image.
bool tiles_inside_images(const Plan& pl, const PixelRowsLayout& lay, size_t q0) {
  for (size_t t = 0, ir = 0; t < lay.tiles; ++t) {
    const size_t rows = lay.tile_rows(t);
    if ((q0 + ir) / pl.p != (q0 + ir + rows - 1) / pl.p) return false;
    ir += rows;
  }
  return true;
}

// d[i] = act(d[i] + res[i]) for the len pixels of one plane run (res may be
// null); NaN fails the compare and passes through, as torch.relu.
void residual_relu_run(float* d, const float* res, size_t len, bool relu) {
  if (res != nullptr) {
    for (size_t i = 0; i < len; ++i) d[i] += res[i];
  }
  if (relu) {
    for (size_t i = 0; i < len; ++i) d[i] = d[i] < 0.0f ? 0.0f : d[i];
  }
}

// out[n, o, pixel] = act(out + residual) in place for the global pixels [q0, q1).
void residual_relu(const Plan& pl, size_t q0, size_t q1, const float* residual, bool relu, float* out) {
  if (residual == nullptr && !relu) return;
  const ConvGeometry& g = pl.g;
  for (size_t q = q0; q < q1;) {
    const size_t n = q / pl.p, pix = q % pl.p, len = std::min(pl.p - pix, q1 - q);
    for (size_t o = 0; o < g.o; ++o) {
      float* d = out + (n * g.o + o) * pl.p + pix;
      residual_relu_run(d, residual != nullptr ? residual + (d - out) : nullptr, len, relu);
    }
    q += len;
  }
}

// out[n, o, pixel] = act(c[q - q0, o] + residual) for the global pixels
// [q0, q1): c is pixels x O (the bias already added).
void transpose_epilogue(const Plan& pl, const float* c, size_t ldc, size_t q0, size_t q1, const float* residual,
                        bool relu, float* out) {
  const ConvGeometry& g = pl.g;
  constexpr gemm::PackTransposeFn<float> kTranspose = NNKERN_X86_ONLY(gemm::f32_pack_transpose_avx512);
  for (size_t q = q0; q < q1;) {
    const size_t n = q / pl.p, pix = q % pl.p, len = std::min(pl.p - pix, q1 - q);
    float* const base = out + n * g.o * pl.p + pix;
    kTranspose(len, g.o, c + (q - q0) * ldc, static_cast<ptrdiff_t>(ldc), base, pl.p);
    if (residual != nullptr || relu) {
      for (size_t o = 0; o < g.o; ++o) {
        float* d = base + o * pl.p;
        residual_relu_run(d, residual != nullptr ? residual + (d - out) : nullptr, len, relu);
      }
    }
    q += len;
  }
}

void conv2d_pixel_rows(const Plan& pl, const float* x, const float* w, const float* bias, const float* residual,
                       bool relu, float* out) {
  const ConvGeometry& g = pl.g;
  const size_t total = g.n * pl.p;
  if (total == 0 || g.o == 0) return;
  // Tiles of about kTileBytes of patches, at least one per thread, their
  // bounds on multiples of the row tile (C4: one image of 196 pixels each).
  const size_t threads = static_cast<size_t>(get_num_threads());
  size_t n_tiles = ceil_div(total * pl.k * sizeof(float), kTileBytes);
  n_tiles = std::min(ceil_div(total, kPixelRowsMr), ceil_div(n_tiles, threads) * threads);
  const auto tile_start = [&](size_t tile) {
    return tile == n_tiles ? total : std::min(total, tile * total / n_tiles / kPixelRowsMr * kPixelRowsMr);
  };
  size_t max_rows = 0;
  for (size_t t = 0; t < n_tiles; ++t) max_rows = std::max(max_rows, tile_start(t + 1) - tile_start(t));
  constexpr std::uint64_t kTag = 0x434f4e5650520001ull;  // "CONVPR"
  // (max_m = 1: its scratch is not used here, and the entry stays the same for every thread count)
  const auto wt = gemm::cached_prepared_b(gemm::row_major(w, pl.k, true), g.o * pl.k * sizeof(float), pl.k, g.o, 1,
                                          kTag);
  const std::vector<conv::Im2colTap> taps = im2col_taps(pl);
  const size_t a_elems = ceil_div(PixelRowsLayout(max_rows, pl.k, wt->slice_depth()).elements(), 16) * 16;
  // the result's rows padded by a cache line: O = 256 floats apart, every
  // fourth row of a 14-row tile would share L1 sets
  const size_t ldc = g.o + 16;
  run_tasks(n_tiles, (a_elems + max_rows * ldc) * sizeof(float), [&](size_t tile, void* scratch) {
    const size_t q0 = tile_start(tile), q1 = tile_start(tile + 1);
    if (q1 <= q0) return;
    float* const a_buf = static_cast<float*>(scratch);  // 64-byte aligned
    float* const c_buf = a_buf + a_elems;
    const PixelRowsLayout lay(q1 - q0, pl.k, wt->slice_depth());
    im2col_panels(pl, taps, x, q0, q1, lay, a_buf);
    if (tiles_inside_images(pl, lay, q0)) {
      multiply_pixel_rows_into(pl, *wt, lay, a_buf, q0, bias, out);
      residual_relu(pl, q0, q1, residual, relu, out);
      return;
    }
    multiply_pixel_rows(*wt, lay, a_buf, c_buf, ldc, bias);
    transpose_epilogue(pl, c_buf, ldc, q0, q1, residual, relu, out);
  });
}

// grad_bias[o] = sum over images and pixels in double, with eight
// interleaved partial sums (one dependent chain of double adds would take
// ~4 cycles per element) combined in a fixed order: the same bits for every
// thread count. float32 sums each plane with the batch-norm statistics
// kernel of the active family (norm/bn_kernels.h: float blocks of at most 8
// terms per lane, double across blocks), the planes added in image order.
const PerIsa<norm::F32BnStatsFn> kPlaneSums = {norm::f32_bn_stats_scalar, NNKERN_X86_ONLY(norm::f32_bn_stats_avx2),
                                               NNKERN_X86_ONLY(norm::f32_bn_stats_avx512)};

void plane_sums(const float* go, const Plan& pl, size_t o, double& s) {
  const auto sums = kPlaneSums.active();
  for (size_t n = 0; n < pl.g.n; ++n) {
    double out[2];
    sums(pl.p, go + (n * pl.g.o + o) * pl.p, 0.0, out);
    s += out[0];
  }
}

void plane_sums(const double* go, const Plan& pl, size_t o, double& s) {
  constexpr size_t kLanes = 8;
  double part[kLanes] = {};
  for (size_t n = 0; n < pl.g.n; ++n) {
    const double* plane = go + (n * pl.g.o + o) * pl.p;
    size_t i = 0;
    for (; i + kLanes <= pl.p; i += kLanes) {
      for (size_t l = 0; l < kLanes; ++l) part[l] += plane[i + l];
    }
    for (; i < pl.p; ++i) part[i % kLanes] += plane[i];
  }
  for (double v : part) s += v;
}

template <class T>
void grad_bias_typed(const Plan& pl, const T* go, T* gb) {
  parallel_for(pl.g.o, [&](size_t o0, size_t o1) {
    for (size_t o = o0; o < o1; ++o) {
      double s = 0;
      plane_sums(go, pl, o, s);
      gb[o] = static_cast<T>(s);
    }
  });
}

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

// ---- one input channel per group (depthwise, channel multipliers): direct kernels

struct DwconvConfig {
  PerIsa<conv::DwconvRowFn<float>> f32_row;
  PerIsa<conv::DwconvWgradRowFn<float>> f32_wgrad;
};

const DwconvConfig kDwconv = {
    {conv::f32_dwconv_row_scalar, NNKERN_X86_ONLY(conv::f32_dwconv_row_avx2),
     NNKERN_X86_ONLY(conv::f32_dwconv_row_avx512)},
    {conv::f32_dwconv_wgrad_row_scalar, NNKERN_X86_ONLY(conv::f32_dwconv_wgrad_row_avx2),
     NNKERN_X86_ONLY(conv::f32_dwconv_wgrad_row_avx512)},
};

struct Dw3x3Config {
  PerIsa<conv::Dw3x3PlaneFn<float>> f32_plane;
  PerIsa<conv::Dw3x3WgradPlaneFn<float>> f32_wgrad;
};

const Dw3x3Config kDw3x3 = {
    {conv::f32_dw3x3_plane_scalar, NNKERN_X86_ONLY(conv::f32_dw3x3_plane_avx2),
     NNKERN_X86_ONLY(conv::f32_dw3x3_plane_avx512)},
    {conv::f32_dw3x3_wgrad_plane_scalar, NNKERN_X86_ONLY(conv::f32_dw3x3_wgrad_plane_avx2),
     NNKERN_X86_ONLY(conv::f32_dw3x3_wgrad_plane_avx512)},
};

conv::Dw3x3PlaneFn<float> dw3x3_plane(float) { return kDw3x3.f32_plane.active(); }
conv::Dw3x3PlaneFn<double> dw3x3_plane(double) { return conv::f64_dw3x3_plane_scalar; }
conv::Dw3x3WgradPlaneFn<float> dw3x3_wgrad(float) { return kDw3x3.f32_wgrad.active(); }
conv::Dw3x3WgradPlaneFn<double> dw3x3_wgrad(double) { return conv::f64_dw3x3_wgrad_plane_scalar; }

conv::DwconvRowsFn<float> dw_rows(float) {
  return active_isa() == Isa::avx512 ? NNKERN_X86_ONLY(conv::f32_dwconv_rows_avx512) : nullptr;
}
conv::DwconvRowsFn<double> dw_rows(double) { return nullptr; }
conv::DwconvRowFn<float> dw_row(float) { return kDwconv.f32_row.active(); }
conv::DwconvRowFn<double> dw_row(double) { return conv::f64_dwconv_row_scalar; }
conv::DwconvWgradRowFn<float> dw_wgrad(float) { return kDwconv.f32_wgrad.active(); }
conv::DwconvWgradRowFn<double> dw_wgrad(double) { return conv::f64_dwconv_wgrad_row_scalar; }
// The whole-plane weight-gradient kernel, or null: then dw_wgrad row by row.
using DwWgradPlaneFn = void (*)(const conv::DwWgradPlane&, const float*, const float*, float*);
DwWgradPlaneFn dw_wgrad_plane(float) {
  return active_isa() == Isa::avx512 ? NNKERN_X86_ONLY(conv::f32_dwconv_wgrad_plane_avx512) : nullptr;
}
void (*dw_wgrad_plane(double))(const conv::DwWgradPlane&, const double*, const double*, double*) { return nullptr; }

// dst (ph x pw) = src (h x w) moved down by `top` rows and right by `left`
// columns (negative: cropped), zeros elsewhere.
template <class T>
void pad_plane(const T* src, size_t h, size_t w, ptrdiff_t top, ptrdiff_t left, size_t ph, size_t pw, T* dst) {
  const auto spw = static_cast<ptrdiff_t>(pw);
  const ptrdiff_t c0 = std::clamp<ptrdiff_t>(left, 0, spw);
  const ptrdiff_t c1 = std::clamp<ptrdiff_t>(left + static_cast<ptrdiff_t>(w), c0, spw);
  for (size_t r = 0; r < ph; ++r) {
    T* d = dst + r * pw;
    const ptrdiff_t sr = static_cast<ptrdiff_t>(r) - top;
    if (sr < 0 || sr >= static_cast<ptrdiff_t>(h)) {
      std::fill_n(d, pw, T(0));
      continue;
    }
    std::fill(d, d + c0, T(0));
    std::memcpy(d + c0, src + static_cast<size_t>(sr) * w + (c0 - left), static_cast<size_t>(c1 - c0) * sizeof(T));
    std::fill(d + c1, d + pw, T(0));
  }
}

// The padded input extent a depthwise conv reads.
struct DwPadded {
  size_t ph, pw;
  explicit DwPadded(const ConvGeometry& g)
      : ph((g.oh - 1) * g.sh + (g.kh - 1) * g.dh + 1), pw((g.ow - 1) * g.sw + (g.kw - 1) * g.dw + 1) {}
};

// Each task pads one input plane into scratch and computes its og output
// planes row by row (all og channels of a row at once where the family has a
// several-channel kernel), the epilogue applied to each row while it is in L1.
template <class T>
void dwconv_forward(const Plan& pl, const T* x, const T* w, const T* bias, const T* residual, bool relu, T* out) {
  const ConvGeometry& g = pl.g;
  if (pl.p == 0) return;
  const DwPadded pd(g);
  const auto kernel = dw_row(T());
  const auto multi = dw_rows(T());
  const size_t taps = g.kh * g.kw;
  parallel_for(g.n * g.c, [&](size_t first, size_t last) {
    ScratchBuffer scratch = acquire_scratch(pd.ph * pd.pw * sizeof(T));
    T* const pad = scratch.as<T>();
    std::vector<const T*> rows(g.kh);
    std::vector<T> init(pl.og);
    std::vector<T*> orows(pl.og);
    for (size_t t = first; t < last; ++t) {
      const size_t n = t / g.c, c = t % g.c, o0 = c * pl.og;
      pad_plane(x + t * pl.hw, g.h, g.w, static_cast<ptrdiff_t>(g.pt), static_cast<ptrdiff_t>(g.pl), pd.ph, pd.pw,
                pad);
      for (size_t r = 0; r < pl.og; ++r) init[r] = bias != nullptr ? bias[o0 + r] : T(0);
      for (size_t oy = 0; oy < g.oh; ++oy) {
        for (size_t i = 0; i < g.kh; ++i) rows[i] = pad + (oy * g.sh + i * g.dh) * pd.pw;
        for (size_t r = 0; r < pl.og; ++r) orows[r] = out + ((n * g.o + o0 + r) * g.oh + oy) * g.ow;
        if (multi != nullptr && pl.og > 1) {
          multi(g.ow, g.kh, g.kw, g.sw, g.dw, rows.data(), w + o0 * taps, pl.og, init.data(), orows.data());
        } else {
          for (size_t r = 0; r < pl.og; ++r) {
            kernel(g.ow, g.kh, g.kw, g.sw, g.dw, rows.data(), w + (o0 + r) * taps, init[r], orows[r]);
          }
        }
        for (T* const orow : orows) {
          if (residual != nullptr) {
            const T* res = residual + (orow - out);
            for (size_t i = 0; i < g.ow; ++i) orow[i] += res[i];
          }
          if (relu) {
            for (size_t i = 0; i < g.ow; ++i) orow[i] = orow[i] < T(0) ? T(0) : orow[i];
          }
        }
      }
    }
  });
}

// grad_input plane by plane. Stride 1 with one output per channel: a
// depthwise conv of the padded grad_output with the flipped kernel (the
// forward row kernel). Otherwise: scatter each tap into a padded plane, then crop.
template <class T>
void dwconv_grad_input(const Plan& pl, const T* go, const T* w, T* gx) {
  const ConvGeometry& g = pl.g;
  const size_t taps = g.kh * g.kw;
  const bool as_conv = g.sh == 1 && g.sw == 1 && pl.og == 1;
  const DwPadded pd(g);
  const size_t gph = as_conv ? g.h + (g.kh - 1) * g.dh : pd.ph;
  const size_t gpw = as_conv ? g.w + (g.kw - 1) * g.dw : pd.pw;
  const auto kernel = dw_row(T());
  parallel_for(g.n * g.c, [&](size_t first, size_t last) {
    ScratchBuffer scratch = acquire_scratch((gph * gpw + taps) * sizeof(T));
    T* const pad = scratch.as<T>();
    T* const wflip = pad + gph * gpw;
    std::vector<const T*> rows(g.kh);
    for (size_t t = first; t < last; ++t) {
      const size_t n = t / g.c, c = t % g.c;
      T* const plane = gx + t * pl.hw;
      if (as_conv) {
        for (size_t k = 0; k < taps; ++k) wflip[k] = w[c * taps + taps - 1 - k];
        pad_plane(go + (n * g.o + c) * pl.p, g.oh, g.ow,
                  static_cast<ptrdiff_t>((g.kh - 1) * g.dh) - static_cast<ptrdiff_t>(g.pt),
                  static_cast<ptrdiff_t>((g.kw - 1) * g.dw) - static_cast<ptrdiff_t>(g.pl), gph, gpw, pad);
        for (size_t iy = 0; iy < g.h; ++iy) {
          for (size_t i = 0; i < g.kh; ++i) rows[i] = pad + (iy + i * g.dh) * gpw;
          kernel(g.w, g.kh, g.kw, 1, g.dw, rows.data(), wflip, T(0), plane + iy * g.w);
        }
        continue;
      }
      std::fill_n(pad, gph * gpw, T(0));
      for (size_t o = c * pl.og; o < (c + 1) * pl.og; ++o) {
        for (size_t oy = 0; oy < g.oh; ++oy) {
          const T* grow = go + ((n * g.o + o) * g.oh + oy) * g.ow;
          for (size_t i = 0; i < g.kh; ++i) {
            for (size_t j = 0; j < g.kw; ++j) {
              const T wt = w[o * taps + i * g.kw + j];
              T* d = pad + (oy * g.sh + i * g.dh) * gpw + j * g.dw;
              for (size_t x = 0; x < g.ow; ++x) d[x * g.sw] += wt * grow[x];
            }
          }
        }
      }
      pad_plane(pad, gph, gpw, -static_cast<ptrdiff_t>(g.pt), -static_cast<ptrdiff_t>(g.pl), g.h, g.w, plane);
    }
  });
}

// grad_weight[o] = sum over images (in order, in double) of the per-image tap
// sums: outputs are split over the threads, so the bits do not depend on the
// thread count.
template <class T>
void dwconv_grad_weight(const Plan& pl, const T* go, const T* x, T* gw) {
  const ConvGeometry& g = pl.g;
  const size_t taps = g.kh * g.kw;
  const DwPadded pd(g);
  const auto kernel = dw_wgrad(T());
  const auto plane_kernel = dw_wgrad_plane(T());
  const conv::DwWgradPlane plane{g.oh, g.ow, g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, pd.pw};
  parallel_for(g.o, [&](size_t first, size_t last) {
    ScratchBuffer scratch = acquire_scratch((pd.ph * pd.pw + taps) * sizeof(T));
    T* const pad = scratch.as<T>();
    T* const part = pad + pd.ph * pd.pw;
    std::vector<double> acc(taps);
    std::vector<const T*> rows(g.kh);
    for (size_t o = first; o < last; ++o) {
      const size_t c = o / pl.og;
      std::fill(acc.begin(), acc.end(), 0.0);
      for (size_t n = 0; n < g.n && pl.p != 0; ++n) {
        pad_plane(x + (n * g.c + c) * pl.hw, g.h, g.w, static_cast<ptrdiff_t>(g.pt), static_cast<ptrdiff_t>(g.pl),
                  pd.ph, pd.pw, pad);
        std::fill_n(part, taps, T(0));
        if (plane_kernel != nullptr) {
          plane_kernel(plane, pad, go + (n * g.o + o) * pl.p, part);
        } else {
          for (size_t oy = 0; oy < g.oh; ++oy) {
            for (size_t i = 0; i < g.kh; ++i) rows[i] = pad + (oy * g.sh + i * g.dh) * pd.pw;
            kernel(g.ow, g.kh, g.kw, g.sw, g.dw, rows.data(), go + ((n * g.o + o) * g.oh + oy) * g.ow, part);
          }
        }
        for (size_t k = 0; k < taps; ++k) acc[k] += static_cast<double>(part[k]);
      }
      for (size_t k = 0; k < taps; ++k) gw[o * taps + k] = static_cast<T>(acc[k]);
    }
  });
}

// ---- few channels, stride 1 (AVX-512 float32): direct kernels (direct.h) on
// the input planes read in place (padded into scratch only when the conv pads).
// Chosen where an im2col matrix would cost more than its GEMM: at most
// kDirectMaxOut output channels and kDirectMaxDepth multiply-adds per output.

constexpr size_t kDirectMaxOut = 32, kDirectMaxDepth = 1024;
constexpr size_t kDirectWgradBatch = 8;  // images per weight-gradient kernel call

void (*const kDirectConv)(const conv::DirectConv&, size_t, size_t) = NNKERN_X86_ONLY(conv::f32_direct_conv_avx512);
void (*const kDirectWgrad)(const conv::DirectWgrad&, size_t, size_t, size_t, size_t, float*) =
    NNKERN_X86_ONLY(conv::f32_direct_wgrad_avx512);

bool (*const kDirectWgradLanes)(const conv::DirectWgradLanes&, size_t, size_t, float*) =
    NNKERN_X86_ONLY(conv::f32_direct_wgrad_lanes_avx512);

void (*const kDirectConvLanes)(const conv::DirectConvLanes&, const float*, size_t, size_t, float*, const float*) =
    NNKERN_X86_ONLY(conv::f32_direct_conv_lanes_avx512);

// The weight gradients' lane reduction (image_lanes.h), shared by the direct and image-lanes kernels.
void (*const kSumLanes)(const float*, size_t, float*) = NNKERN_X86_ONLY(conv::f32_sum_lanes_avx512);

bool direct_isa() { return active_isa() == Isa::avx512 && kDirectConv != nullptr; }

// What every direct kernel needs: the family, one group, stride 1, a kernel
// wider than one tap, and at most `outputs` output channels (of the conv the
// kernel runs) of at most `depth` <= kDirectMaxDepth multiply-adds each. The
// forward takes them when the output has few channels.
bool direct_shape(const Plan& pl, size_t outputs, size_t depth) {
  const ConvGeometry& g = pl.g;
  return direct_isa() && g.groups == 1 && g.sh == 1 && g.sw == 1 && g.kh * g.kw > 1 && outputs <= kDirectMaxOut &&
         depth <= kDirectMaxDepth;
}

bool direct_applies(const Plan& pl) { return pl.cg > 1 && direct_shape(pl, pl.g.o, pl.k); }

// grad_weight: as the forward, and also with one input channel (a LeNet
// 1 -> 6 first layer): the tile shares each input load among its outputs.
bool direct_grad_weight_applies(const Plan& pl) { return direct_shape(pl, pl.g.o, pl.k); }

// grad_input is a stride-1 conv of the padded grad_output (O channels) with
// the flipped, transposed weight (C outputs): few *input* channels.
bool direct_grad_input_applies(const Plan& pl) {
  return pl.cg > 1 && direct_shape(pl, pl.g.c, pl.g.o * pl.g.kh * pl.g.kw);
}

// The C planes of image n as the kernels read them: in place when the conv
// reads no padding, else padded into `pad` (ph x pw each). Returns the planes.
struct DirectPlanes {
  size_t ph, pw, plane, pitch;
  bool in_place;
  explicit DirectPlanes(const ConvGeometry& g) {
    const DwPadded pd(g);
    ph = pd.ph;
    pw = pd.pw;
    in_place = g.pt == 0 && g.pl == 0 && ph <= g.h && pw <= g.w;
    plane = in_place ? g.h * g.w : ph * pw;
    pitch = in_place ? g.w : pw;
  }
  const float* image(const ConvGeometry& g, const float* x, size_t n, float* pad) const {
    const float* src = x + n * g.c * g.h * g.w;
    if (in_place) return src;
    for (size_t c = 0; c < g.c; ++c) {
      pad_plane(src + c * g.h * g.w, g.h, g.w, static_cast<ptrdiff_t>(g.pt), static_cast<ptrdiff_t>(g.pl), ph, pw,
                pad + c * plane);
    }
    return pad;
  }
};

// Runs body(in, n, k) for the tasks (image n, chunk k), n * chunks of them
// over the pool; `in` is image n's planes as the kernels read them (padded
// into the thread's scratch once per image when the conv pads).
template <class Body>
void for_image_chunks(const DirectPlanes& dp, const ConvGeometry& g, const float* x, size_t chunks,
                      const Body& body) {
  parallel_for(g.n * chunks, [&](size_t first, size_t last) {
    ScratchBuffer scratch;
    if (!dp.in_place) scratch = acquire_scratch(g.c * dp.plane * sizeof(float));
    size_t padded = g.n;  // the image now in scratch
    const float* in = nullptr;
    for (size_t t = first; t < last; ++t) {
      const size_t n = t / chunks, k = t % chunks;
      if (n != padded || dp.in_place) {
        in = dp.image(g, x, n, scratch.as<float>());
        padded = n;
      }
      body(in, n, k);
    }
  });
}

// Channel chunks per image: with fewer images than threads, each image's
// output channels are cut so that every thread has work.
size_t direct_chunks(size_t images, size_t channels) {
  const auto threads = static_cast<size_t>(get_num_threads());
  if (images >= threads) return 1;
  return std::max<size_t>(1, std::min(ceil_div(channels, 4), ceil_div(threads, std::max<size_t>(images, 1))));
}

// The forward with at most 16 output channels: the channels in the lanes
// (weights repacked per call: c * kh * kw vectors); tasks are images, or row
// ranges of an image when there are fewer images than threads.
void direct_forward_lanes(const Plan& pl, const float* x, const float* w, const float* bias, const float* residual,
                          bool relu, float* out) {
  const ConvGeometry& g = pl.g;
  const DirectPlanes dp(g);
  ScratchBuffer wbuf = acquire_scratch((pl.k + 1) * 16 * sizeof(float));
  float* const wt = wbuf.as<float>();
  float* const bias16 = wt + pl.k * 16;
  for (size_t t = 0; t < pl.k; ++t) {
    for (size_t o = 0; o < 16; ++o) wt[t * 16 + o] = o < g.o ? w[o * pl.k + t] : 0.0f;
  }
  for (size_t o = 0; o < 16; ++o) bias16[o] = bias != nullptr && o < g.o ? bias[o] : 0.0f;
  const conv::DirectConvLanes p{g.c, dp.plane, dp.pitch, wt, bias16, g.o, g.kh, g.kw, g.dh, g.dw, g.oh, g.ow, relu};
  const auto threads = static_cast<size_t>(get_num_threads());
  const size_t chunks = g.n >= threads ? 1 : std::min(g.oh, ceil_div(threads, g.n));
  for_image_chunks(dp, g, x, chunks, [&](const float* in, size_t n, size_t k) {
    kDirectConvLanes(p, in, k * g.oh / chunks, (k + 1) * g.oh / chunks, out + n * g.o * pl.p,
                     residual != nullptr ? residual + n * g.o * pl.p : nullptr);
  });
}

void direct_forward(const Plan& pl, const float* x, const float* w, const float* bias, const float* residual,
                    bool relu, float* out) {
  const ConvGeometry& g = pl.g;
  if (pl.p == 0 || g.n == 0) return;
  if (kDirectConvLanes != nullptr && g.o <= 16) {
    direct_forward_lanes(pl, x, w, bias, residual, relu, out);
    return;
  }
  const DirectPlanes dp(g);
  const size_t chunks = direct_chunks(g.n, g.o);
  for_image_chunks(dp, g, x, chunks, [&](const float* in, size_t n, size_t k) {
    const conv::DirectConv p{in,   g.c,  dp.plane, dp.pitch, w,    g.o,
                             g.kh, g.kw, g.dh,     g.dw,     g.oh, g.ow,
                             out + n * g.o * pl.p,   bias,
                             residual != nullptr ? residual + n * g.o * pl.p : nullptr, relu,
                             dp.in_place ? x + g.n * g.c * pl.hw : in + g.c * dp.plane};
    kDirectConv(p, k * g.o / chunks, (k + 1) * g.o / chunks);
  });
}

// The weight of grad_input's conv: w^T flipped, wt[c][o][i][j] = w[o][c][kh - 1 - i][kw - 1 - j].
std::vector<float> flipped_transposed(const ConvGeometry& g, const float* w) {
  const size_t taps = g.kh * g.kw;
  std::vector<float> wt(g.o * g.c * taps);
  for (size_t o = 0; o < g.o; ++o) {
    for (size_t c = 0; c < g.c; ++c) {
      for (size_t t = 0; t < taps; ++t) wt[(c * g.o + o) * taps + t] = w[(o * g.c + c) * taps + taps - 1 - t];
    }
  }
  return wt;
}

// grad_input[n] = the stride-1 conv of grad_output[n] padded by (k - 1) * d -
// padding (cropped where negative) with w^T flipped (flipped_transposed).
void direct_grad_input(const Plan& pl, const float* go, const float* w, float* gx) {
  const ConvGeometry& g = pl.g;
  if (g.n == 0 || pl.hw == 0) return;
  const std::vector<float> wt = flipped_transposed(g, w);
  const size_t ph = g.h + (g.kh - 1) * g.dh, pw = g.w + (g.kw - 1) * g.dw;
  const size_t pitch = pw, plane = ph * pitch;
  const auto top = static_cast<ptrdiff_t>((g.kh - 1) * g.dh) - static_cast<ptrdiff_t>(g.pt);
  const auto left = static_cast<ptrdiff_t>((g.kw - 1) * g.dw) - static_cast<ptrdiff_t>(g.pl);
  const size_t chunks = direct_chunks(g.n, g.c);
  parallel_for(g.n * chunks, [&](size_t first, size_t last) {
    // 16 floats of slack after the planes: every tile's loads may read whole vectors
    ScratchBuffer scratch = acquire_scratch((g.o * plane + 16) * sizeof(float));
    float* const pad = scratch.as<float>();
    std::fill_n(pad + g.o * plane, 16, 0.0f);
    size_t padded = g.n;
    for (size_t t = first; t < last; ++t) {
      const size_t n = t / chunks, k = t % chunks;
      if (n != padded) {
        for (size_t o = 0; o < g.o; ++o) {
          pad_plane(go + (n * g.o + o) * pl.p, g.oh, g.ow, top, left, ph, pitch, pad + o * plane);
        }
        padded = n;
      }
      const conv::DirectConv p{pad,  g.o,  plane, pitch,  wt.data(), g.c,   g.kh,    g.kw,    g.dh,
                               g.dw, g.h,  g.w,     gx + n * g.c * pl.hw, nullptr,   nullptr, false,
                               pad + g.o * plane + 16};
      kDirectConv(p, k * g.c / chunks, (k + 1) * g.c / chunks);
    }
  });
}

// grad_weight with the output channels in the lanes (9 to 16 of them: with
// fewer, most lanes would idle and the row tile is faster; kw 2..7):
// grad_output transposed once to pixel-major 16-float rows, then each thread
// owns a range of kernel rows (c, i), every tap one accumulator over all
// images in order. The bits do not depend on the thread count.
bool direct_grad_weight_lanes(const Plan& pl, const float* go, const float* x, float* gw) {
  const ConvGeometry& g = pl.g;
  if (kDirectWgradLanes == nullptr || g.o > 16 || g.o <= 8 || g.kw < 2 || g.kw > 7) return false;
  const DirectPlanes dp(g);
  if (!dp.in_place) return false;
  const size_t rows = g.c * g.kh;
  ScratchBuffer acc_buf = acquire_scratch(rows * g.kw * 16 * sizeof(float));
  float* const acc = acc_buf.as<float>();
  std::fill_n(acc, rows * g.kw * 16, 0.0f);
  if (pl.p != 0 && g.n != 0) {
    ScratchBuffer gt_buf = acquire_scratch(g.n * pl.p * 16 * sizeof(float));
    float* const gt = gt_buf.as<float>();
    parallel_for(g.n, [&](size_t n0, size_t n1) {
      for (size_t n = n0; n < n1; ++n) {
        float* const d = gt + n * pl.p * 16;
        const float* const src = go + n * g.o * pl.p;
        for (size_t q = 0; q < pl.p; ++q) {
          for (size_t o = 0; o < 16; ++o) d[q * 16 + o] = o < g.o ? src[o * pl.p + q] : 0.0f;
        }
      }
    });
    const conv::DirectWgradLanes p{x, dp.plane, dp.pitch, g.kh, g.kw, g.dh, g.dw, gt, g.oh, g.ow, g.n,
                                   g.c * pl.hw, pl.p * 16};
    parallel_for(rows, [&](size_t r0, size_t r1) { kDirectWgradLanes(p, r0, r1, acc); });
  }
  for (size_t o = 0; o < g.o; ++o) {
    for (size_t t = 0; t < pl.k; ++t) gw[o * pl.k + t] = acc[t * 16 + o];
  }
  return true;
}

// grad_weight: 16-lane partial sums per (o, tap), images added in order, each
// thread owning a range of taps; the lanes reduced in double, in order. The
// bits do not depend on the thread count.
void direct_grad_weight(const Plan& pl, const float* go, const float* x, float* gw) {
  if (direct_grad_weight_lanes(pl, go, x, gw)) return;
  const ConvGeometry& g = pl.g;
  const size_t k = pl.k;
  std::vector<float> acc(g.o * k * 16, 0.0f);
  const DirectPlanes dp(g);
  if (pl.p != 0) {
    parallel_for(k, [&](size_t t0, size_t t1) {
      ScratchBuffer scratch;
      if (!dp.in_place) scratch = acquire_scratch(g.c * dp.plane * sizeof(float));
      // unpadded images go in batches (fewer passes over the accumulators; a
      // batch's planes stay in L2); padded ones one at a time through scratch
      const size_t batch = dp.in_place ? kDirectWgradBatch : 1;
      for (size_t n = 0; n < g.n; n += batch) {
        const size_t images = std::min(batch, g.n - n);
        const conv::DirectWgrad p{dp.image(g, x, n, scratch.as<float>()), g.c, dp.plane, dp.pitch, g.kh, g.kw,
                                  g.dh, g.dw, go + n * g.o * pl.p, g.o, g.oh, g.ow, images, g.c * pl.hw,
                                  g.o * pl.p};
        kDirectWgrad(p, 0, g.o, t0, t1, acc.data());
      }
    });
  }
  kSumLanes(acc.data(), g.o * k, gw);
}

// ---- image lanes (image_lanes.h, AVX-512 float32): 16 images per vector, for
// the direct kernels' shapes (few channels, stride 1) with a batch of 16+, one
// input channel included: the forward and grad_input. Each group of 16 images
// is transposed into the lanes layout, convolved with aligned loads only, and
// transposed back. LeNet at 2 threads: conv2 forward 242 -> 127 us, conv1
// 124 -> 91 us, conv2 grad_input 288 -> 220 us. The weight gradient in this
// layout (OB channels x one kernel row of taps per pixel) measured no faster
// than direct.h's (0.87-0.99x): it stays there.

constexpr size_t kLanesMinBatch = 16;

void (*const kToLanes)(const float*, size_t, size_t, size_t, size_t, size_t, size_t, size_t, size_t, size_t,
                       float*) = NNKERN_X86_ONLY(conv::f32_to_lanes_avx512);
void (*const kFromLanes)(const float*, size_t, size_t, size_t, size_t, size_t, const float*, bool, float*) =
    NNKERN_X86_ONLY(conv::f32_from_lanes_avx512);
void (*const kConvLanes)(const conv::LanesConv&, size_t, size_t, float*) =
    NNKERN_X86_ONLY(conv::f32_conv_lanes_avx512);

// A group's input and output planes in lanes layout stay in L2 (LeNet conv1: 64 + 301 KB).
constexpr size_t kLanesMaxGroupBytes = size_t{2} << 20;

// As direct_shape (at most `outputs` output channels of at most `depth`
// multiply-adds each, stride 1), for a batch of kLanesMinBatch or more whose
// group buffers (in_planes planes rows x pitch in, `outputs` planes of the
// output) fit kLanesMaxGroupBytes.
bool lanes_shape(const Plan& pl, size_t outputs, size_t depth, size_t in_planes, size_t rows, size_t pitch,
                 size_t out_pixels) {
  return kConvLanes != nullptr && direct_shape(pl, outputs, depth) && pl.g.n >= kLanesMinBatch &&
         (in_planes * rows * pitch + outputs * out_pixels) * 16 * sizeof(float) <= kLanesMaxGroupBytes;
}
bool lanes_applies(const Plan& pl) {
  const DwPadded pd(pl.g);
  return lanes_shape(pl, pl.g.o, pl.k, pl.g.c, pd.ph, pd.pw, pl.p);
}
// grad_input as a conv of grad_output padded by (k - 1) * d - padding (not cropped)
bool lanes_grad_input_applies(const Plan& pl) {
  const ConvGeometry& g = pl.g;
  return g.pt <= (g.kh - 1) * g.dh && g.pl <= (g.kw - 1) * g.dw &&
         lanes_shape(pl, g.c, g.o * g.kh * g.kw, g.o, g.h + (g.kh - 1) * g.dh, g.w + (g.kw - 1) * g.dw, pl.hw);
}

// A stride-1 conv of n images x (N, c, h, w) placed at (top, left) in planes
// rows x pitch, into out (N, o, oh, ow) with the bias, residual and ReLU.
struct LanesJob {
  const float* x;
  size_t c, h, w, top, left, rows, pitch;
  const float* weight;
  const float* bias;
  size_t o, kh, kw, dh, dw, oh, ow;
  const float* residual;
  bool relu;
  float* out;
};

// One task per group of 16 images (and output-channel range, when there are
// fewer groups than threads): transpose in, convolve, transpose out.
void lanes_conv(const LanesJob& j, size_t n) {
  const size_t groups = ceil_div(n, 16), threads = static_cast<size_t>(get_num_threads());
  const size_t split = groups >= threads ? 1 : std::min(j.o, ceil_div(threads, groups));
  const size_t in_elems = j.c * j.rows * j.pitch * 16, plane = j.oh * j.ow;
  run_tasks(groups * split, (in_elems + j.o * plane * 16) * sizeof(float), [&](size_t t, void* scratch) {
    const size_t grp = t / split, k = t % split;
    float* const src = static_cast<float*>(scratch);  // 64-byte aligned, as is dst (16-float multiples)
    float* const dst = src + in_elems;
    const size_t n0 = grp * 16, count = std::min<size_t>(16, n - n0), image = j.c * j.h * j.w;
    kToLanes(j.x + n0 * image, count, image, j.c, j.h, j.w, j.top, j.left, j.rows, j.pitch, src);
    const size_t row_hi = j.top + (j.top < j.rows ? std::min(j.h, j.rows - j.top) : 0);
    const conv::LanesConv p{src,    j.c,    j.rows, j.pitch, j.top, row_hi, j.weight, j.bias,
                            j.o,    j.kh,   j.kw,   j.dh,    j.dw,  j.oh,   j.ow};
    const size_t o0 = k * j.o / split, o1 = (k + 1) * j.o / split;
    kConvLanes(p, o0, o1, dst);
    kFromLanes(dst, o0, o1, plane, count, j.o * plane, j.residual != nullptr ? j.residual + n0 * j.o * plane : nullptr,
               j.relu, j.out + n0 * j.o * plane);
  });
}

void lanes_forward(const Plan& pl, const float* x, const float* w, const float* bias, const float* residual,
                   bool relu, float* out) {
  const ConvGeometry& g = pl.g;
  if (pl.p == 0 || g.n == 0) return;
  const DwPadded pd(g);
  lanes_conv({x, g.c, g.h, g.w, g.pt, g.pl, pd.ph, pd.pw, w, bias, g.o, g.kh, g.kw, g.dh, g.dw, g.oh, g.ow,
              residual, relu, out},
             g.n);
}

// grad_input: the conv of grad_output padded by (k - 1) * d - padding with the
// flipped, transposed weight, as direct_grad_input.
void lanes_grad_input(const Plan& pl, const float* go, const float* w, float* gx) {
  const ConvGeometry& g = pl.g;
  if (g.n == 0 || pl.hw == 0) return;
  const std::vector<float> wt = flipped_transposed(g, w);
  lanes_conv({go, g.o, g.oh, g.ow, (g.kh - 1) * g.dh - g.pt, (g.kw - 1) * g.dw - g.pl, g.h + (g.kh - 1) * g.dh,
              g.w + (g.kw - 1) * g.dw, wt.data(), nullptr, g.c, g.kh, g.kw, g.dh, g.dw, g.h, g.w, nullptr, false, gx},
             g.n);
}

// ---- weight gradient without im2col (wgrad_taps.h; column stride 1 or 2,
// AVX-512 float32): gw^T (taps x O) = patches^T x grad_output^T, the patches
// read in place from zero-padded images, grad_output packed once into 32-wide
// panels. For each chunk of images (up to 64 MB of padded images and packed
// grad_output), phase 1 (images split over threads): pad the images, pack
// their grad_output; phase 2 (input channels split over threads): for each
// image, slice of output rows and panel, the channels' tap tiles in turn, so
// that a B panel slice read from L2 serves them all. Each element sums images,
// slices and pixels in order: bits independent of the thread count. C1's
// grad_weight at 2 threads: 8.5 -> 5.7-5.9 ms (im2col and the transposed
// packing of its columns were ~40% of the old path; the 9 x 32 tile runs
// near the FMA peak).

void (*const kWgradTaps)(size_t, size_t, const float*, const ptrdiff_t*, size_t, size_t, size_t, size_t, size_t,
                         const float*, float*, size_t, float) = NNKERN_X86_ONLY(conv::f32_wgrad_taps_avx512);
void (*const kPackTranspose)(size_t, size_t, const float*, ptrdiff_t, float*, size_t) =
    NNKERN_X86_ONLY(gemm::f32_pack_transpose_avx512);

constexpr size_t kTapsChunkBytes = size_t{64} << 20;  // padded images + packed grad_output per chunk
constexpr size_t kTapsSlicePixels = 512;  // output pixels per slice (whole rows): B panel slices of <= 64 KB

struct TapsLayout {
  size_t ph, pw, image, panels, b_image;  // padded plane, floats per padded image, B panels and floats per image
  explicit TapsLayout(const Plan& pl) {
    const DwPadded pd(pl.g);
    ph = pd.ph;
    pw = pd.pw;
    image = ceil_div(pl.g.c * ph * pw, 16) * 16;  // keeps every B panel 64-byte aligned
    panels = ceil_div(pl.g.o, 32);
    b_image = panels * pl.p * 32;
  }
  size_t bytes(size_t n) const { return n * (image + b_image) * sizeof(float); }
};

// groups 1, 4..14 taps, at least 32 outputs (the direct kernels take fewer),
// output planes of kTapsMinPixels or more: with fewer, each tile call sums too
// few pixels for its accumulators' round trip (2 threads: 7x7 planes, 512
// channels 0.25x, 14x14 with 256 0.88x the im2col path; 16x16 with 128 1.40x,
// 28x28 1.06-1.43x, 56x56 1.41-1.43x, 32x32 from 3 channels 1.70x).
constexpr size_t kTapsMinPixels = 256;
bool taps_grad_weight_applies(const Plan& pl) {
  const ConvGeometry& g = pl.g;
  return kWgradTaps != nullptr && active_isa() == Isa::avx512 && g.groups == 1 && (g.sw == 1 || g.sw == 2) &&
         g.kh * g.kw >= 4 && g.kh * g.kw <= conv::kWgradTapsMaxRows && g.o >= 32 && pl.p >= kTapsMinPixels &&
         TapsLayout(pl).bytes(1) <= kTapsChunkBytes;
}

void taps_grad_weight(const Plan& pl, const float* go, const float* x, float* gw) {
  const ConvGeometry& g = pl.g;
  const size_t taps = g.kh * g.kw, k = pl.k;
  if (g.n == 0) {
    std::fill_n(gw, g.o * k, 0.0f);
    return;
  }
  const TapsLayout lay(pl);
  // images in chunks whose padded copies and packed grad_output fit kTapsChunkBytes
  const size_t chunk = std::max<size_t>(1, std::min(g.n, kTapsChunkBytes / lay.bytes(1)));
  ScratchBuffer buf = acquire_scratch(lay.bytes(chunk) + k * g.o * sizeof(float));
  float* const xpad = buf.as<float>();
  float* const bpack = xpad + chunk * lay.image;  // 64-byte aligned (image: a multiple of 16 floats)
  float* const gwt = bpack + chunk * lay.b_image;  // (k, O): row t = (c, i, j)
  std::vector<ptrdiff_t> a_row(taps);
  for (size_t i = 0; i < g.kh; ++i) {
    for (size_t j = 0; j < g.kw; ++j) a_row[i * g.kw + j] = static_cast<ptrdiff_t>(i * g.dh * lay.pw + j * g.dw);
  }
  const size_t slice_rows = std::max<size_t>(1, kTapsSlicePixels / g.ow);
  for (size_t n0 = 0; n0 < g.n; n0 += chunk) {
    const size_t n1 = std::min(g.n, n0 + chunk);
    parallel_for(n1 - n0, [&](size_t first, size_t last) {
      for (size_t m = first; m < last; ++m) {
        const size_t n = n0 + m;
        for (size_t c = 0; c < g.c; ++c) {
          pad_plane(x + (n * g.c + c) * pl.hw, g.h, g.w, static_cast<ptrdiff_t>(g.pt), static_cast<ptrdiff_t>(g.pl),
                    lay.ph, lay.pw, xpad + m * lay.image + c * lay.ph * lay.pw);
        }
        for (size_t q = 0; q < lay.panels; ++q) {
          kPackTranspose(std::min<size_t>(32, g.o - q * 32), pl.p, go + (n * g.o + q * 32) * pl.p,
                         static_cast<ptrdiff_t>(pl.p), bpack + m * lay.b_image + q * pl.p * 32, 32);
        }
      }
    });
    parallel_for(g.c, [&](size_t c0, size_t c1) {
      for (size_t m = 0; m < n1 - n0; ++m) {
        for (size_t y0 = 0; y0 < g.oh; y0 += slice_rows) {
          const size_t y1 = std::min(g.oh, y0 + slice_rows);
          const float beta = n0 + m == 0 && y0 == 0 ? 0.0f : 1.0f;
          for (size_t q = 0; q < lay.panels; ++q) {
            const float* const b = bpack + m * lay.b_image + q * pl.p * 32 + y0 * g.ow * 32;
            const size_t nr = std::min<size_t>(32, g.o - q * 32);
            for (size_t c = c0; c < c1; ++c) {
              kWgradTaps(taps, nr, xpad + m * lay.image + c * lay.ph * lay.pw, a_row.data(), g.sh * lay.pw, g.sw,
                         y0, y1, g.ow, b, gwt + c * taps * g.o + q * 32, g.o, beta);
            }
          }
        }
      }
    });
  }
  for (size_t o = 0; o < g.o; ++o) {
    for (size_t t = 0; t < k; ++t) gw[o * k + t] = gwt[t * g.o + o];
  }
}

// ---- depthwise 3x3, stride 1, dilation 1 (any padding, channel multipliers):
// whole-plane kernels (dw3x3.h) on the unpadded planes, the epilogue fused.

bool dw3x3_applies(const Plan& pl) {
  const ConvGeometry& g = pl.g;
  return pl.cg == 1 && g.kh == 3 && g.kw == 3 && g.sh == 1 && g.sw == 1 && g.dh == 1 && g.dw == 1;
}

// The forward reads x (h x w) at (oy + i - pt, ox + j - pl).
conv::Dw3x3Geo dw3x3_forward_geo(const ConvGeometry& g) {
  return {g.h, g.w, g.oh, g.ow, static_cast<ptrdiff_t>(g.pt), static_cast<ptrdiff_t>(g.pl)};
}

// grad_input[iy][ix] = sum_{i,j} go[iy + pt - i][ix + pl - j] w[i][j]: the
// same kernel over grad_output with the flipped weights and offsets 2 - pt,
// 2 - pl (negative when the padding exceeds 2: a crop).
conv::Dw3x3Geo dw3x3_grad_input_geo(const ConvGeometry& g) {
  return {g.oh, g.ow, g.h, g.w, 2 - static_cast<ptrdiff_t>(g.pt), 2 - static_cast<ptrdiff_t>(g.pl)};
}

// One task per output plane (n, o); each reads its input plane once.
template <class T>
void dw3x3_forward(const Plan& pl, const T* x, const T* w, const T* bias, const T* residual, bool relu, T* out) {
  const ConvGeometry& g = pl.g;
  const auto kernel = dw3x3_plane(T());
  const conv::Dw3x3Geo geo = dw3x3_forward_geo(g);
  parallel_for(g.n * g.o, [&](size_t first, size_t last) {
    for (size_t t = first; t < last; ++t) {
      const size_t n = t / g.o, o = t % g.o, c = o / pl.og;
      kernel(geo, x + (n * g.c + c) * pl.hw, w + o * 9, bias != nullptr ? bias[o] : T(0),
             residual != nullptr ? residual + t * pl.p : nullptr, relu, /*outside_zero=*/true, out + t * pl.p);
    }
  });
}

// grad_input plane (n, c): the first output channel of the group writes it,
// the others (channel multipliers) add to it in channel order. Taps reading
// outside grad_output are left out (not multiplied by zero), as col2im.
template <class T>
void dw3x3_grad_input_plane(const Plan& pl, conv::Dw3x3PlaneFn<T> kernel, const conv::Dw3x3Geo& geo, const T* go,
                            const T* w, size_t n, size_t c, T* gx) {
  const ConvGeometry& g = pl.g;
  T* const plane = gx + (n * g.c + c) * pl.hw;
  for (size_t o = c * pl.og; o < (c + 1) * pl.og; ++o) {
    T wflip[9];
    for (size_t k = 0; k < 9; ++k) wflip[k] = w[o * 9 + 8 - k];
    kernel(geo, go + (n * g.o + o) * pl.p, wflip, T(0), o == c * pl.og ? nullptr : plane, /*relu=*/false,
           /*outside_zero=*/false, plane);
  }
}

// grad_input, grad_weight and grad_bias in one pass over the planes: task
// (n, c) writes grad_input plane (n, c) and, for each output channel o of
// input channel c, the tap sums of (x, grad_output) planes (n, o) and the sum
// of grad_output plane (n, o) (float lane sums in a shape-fixed order) into
// part[n][o][0..10). The planes are walked in memory order and grad_output is
// read from memory once (the weight pass finds it in cache). Then each
// channel adds its images' sums in double, in image order: the bits of every
// output depend on neither the thread count nor the output mask.
template <class T>
void dw3x3_backward(const Plan& pl, const T* go, const T* x, const T* w, T* gx, T* gw, T* gb) {
  const ConvGeometry& g = pl.g;
  const auto fwd = dw3x3_plane(T());
  const auto wgrad = dw3x3_wgrad(T());
  const conv::Dw3x3Geo gi_geo = dw3x3_grad_input_geo(g), wg_geo = dw3x3_forward_geo(g);
  const bool want_w = gw != nullptr || gb != nullptr, taps = gw != nullptr;
  constexpr size_t kSums = 10;
  ScratchBuffer scratch;
  if (want_w) scratch = acquire_scratch(std::max<size_t>(1, g.n * g.o * kSums) * sizeof(T));
  T* const part = scratch.as<T>();
  parallel_for(g.n * g.c, [&](size_t first, size_t last) {
    for (size_t t = first; t < last; ++t) {
      const size_t n = t / g.c, c = t % g.c;
      if (gx != nullptr) dw3x3_grad_input_plane(pl, fwd, gi_geo, go, w, n, c, gx);
      if (!want_w) continue;
      for (size_t o = c * pl.og; o < (c + 1) * pl.og; ++o) {
        wgrad(wg_geo, x + t * pl.hw, go + (n * g.o + o) * pl.p, taps, part + (n * g.o + o) * kSums);
      }
    }
  });
  if (!want_w) return;
  parallel_for(g.o, [&](size_t first, size_t last) {
    for (size_t o = first; o < last; ++o) {
      double acc[kSums] = {};
      for (size_t n = 0; n < g.n; ++n) {
        for (size_t k = 0; k < kSums; ++k) acc[k] += static_cast<double>(part[(n * g.o + o) * kSums + k]);
      }
      if (gw != nullptr) {
        for (size_t k = 0; k < 9; ++k) gw[o * 9 + k] = static_cast<T>(acc[k]);
      }
      if (gb != nullptr) gb[o] = static_cast<T>(acc[9]);
    }
  });
}

template <class T>
const T* data_or_null(const ArrayView* v) {
  return v != nullptr ? v->as<T>() : nullptr;
}

std::size_t input_elements(const ConvGeometry& g) { return g.n * g.c * g.h * g.w; }
std::size_t output_elements(const ConvGeometry& g) { return g.n * g.o * g.oh * g.ow; }
std::size_t weight_elements(const Plan& pl) { return pl.g.o * pl.k; }

template <class T>
void conv2d_backward_typed(const Plan& pl, const ArrayView& go, const ArrayView& x, const ArrayView& w,
                           const ArrayView* gx, const ArrayView* gw, const ArrayView* gb) {
  if (dw3x3_applies(pl)) {
    dw3x3_backward(pl, go.as<T>(), x.as<T>(), w.as<T>(), gx != nullptr ? gx->as<T>() : nullptr,
                   gw != nullptr ? gw->as<T>() : nullptr, gb != nullptr ? gb->as<T>() : nullptr);
    return;
  }
  if (gb != nullptr) grad_bias_typed(pl, go.as<T>(), gb->as<T>());
  if (pl.cg == 1) {
    bool done = false;
    if constexpr (std::is_same_v<T, float>) {
      if (gw != nullptr && direct_grad_weight_applies(pl)) {
        direct_grad_weight(pl, go.as<float>(), x.as<float>(), gw->as<float>());
        done = true;
      }
    }
    if (gw != nullptr && !done) dwconv_grad_weight(pl, go.as<T>(), x.as<T>(), gw->as<T>());
    if (gx != nullptr) dwconv_grad_input(pl, go.as<T>(), w.as<T>(), gx->as<T>());
    return;
  }
  if (gw != nullptr) {
    if constexpr (std::is_same_v<T, float>) {
      if (direct_grad_weight_applies(pl)) {
        direct_grad_weight(pl, go.as<float>(), x.as<float>(), gw->as<float>());
      } else if (taps_grad_weight_applies(pl)) {
        taps_grad_weight(pl, go.as<float>(), x.as<float>(), gw->as<float>());
      } else {
        grad_weight_typed(pl, go.as<T>(), x.as<T>(), gw->as<T>());
      }
    } else {
      grad_weight_typed(pl, go.as<T>(), x.as<T>(), gw->as<T>());
    }
  }
  if (gx == nullptr) return;
  if constexpr (std::is_same_v<T, float>) {
    if (winograd_grad_input_applies(pl.g) && all_finite(go.as<float>(), output_elements(pl.g))) {
      const auto filters = winograd_grad_input_filters(pl.g, w.as<float>());
      if (filters->finite) {
        conv2d_winograd(grad_input_geometry(pl.g), go.as<float>(), *filters, nullptr, nullptr, false,
                        gx->as<float>());
        return;
      }
    }
    // the padded grad_output multiplies every weight, so a NaN / Inf weight
    // would reach pixels that col2im leaves out: such weights take col2im
    if ((lanes_grad_input_applies(pl) || direct_grad_input_applies(pl)) &&
        all_finite(w.as<float>(), weight_elements(pl))) {
      if (lanes_grad_input_applies(pl)) {
        lanes_grad_input(pl, go.as<float>(), w.as<float>(), gx->as<float>());
      } else {
        direct_grad_input(pl, go.as<float>(), w.as<float>(), gx->as<float>());
      }
      return;
    }
  }
  grad_input_typed(pl, go.as<T>(), w.as<T>(), gx->as<T>());
}

// ---- implicit pixel rows: the pixel-rows GEMM without im2col
//
// A row tile of pixels inside one output row reads, at tap row r = (c, i, j),
// the padded input at (c, oy * sh + i * dh, (ox0 + t) * sw + j * dw) for its
// pixels t: a constant offset per tap row plus t * sw. So the kernel reads A
// in place from a zero-padded copy of the image (one sequential pass; C4:
// 128 x 29 x 29 floats) through a table of tap-row offsets, instead of
// packed patches (C4: im2col was ~13% of the call).

// On top of pixel_rows_form_applies: column stride 1 or 2 (the kernel's pixel
// strides), a padded image that stays in L2 (its rows are read by every
// column panel; C4: 430 KB), and an image per thread at least (one task per
// image, each padding its own; smaller batches take conv2d_pixel_rows, whose
// tiles split images, with the same bits). The shape alone, not the thread
// count, decides between this family and conv2d_gemm, whose bits differ.
constexpr size_t kImplicitMaxImageBytes = size_t{1} << 20;
bool pixel_rows_implicit_shape(const Plan& pl) {
  const ConvGeometry& g = pl.g;
  const DwPadded pd(g);
  return (g.sw == 1 || g.sw == 2) && pl.cg * pd.ph * pd.pw * sizeof(float) <= kImplicitMaxImageBytes;
}
bool pixel_rows_implicit_applies(const Plan& pl) {
  return pixel_rows_implicit_shape(pl) && pl.g.n >= static_cast<size_t>(get_num_threads());
}

void conv2d_pixel_rows_implicit(const Plan& pl, const float* x, const float* w, const float* bias,
                                const float* residual, bool relu, float* out) {
  const ConvGeometry& g = pl.g;
  if (pl.p == 0 || g.n == 0) return;
  constexpr std::uint64_t kTag = 0x434f4e5650520001ull;  // as conv2d_pixel_rows: the same packed W^T
  const auto wt = gemm::cached_prepared_b(gemm::row_major(w, pl.k, true), g.o * pl.k * sizeof(float), pl.k, g.o, 1,
                                          kTag);
  const DwPadded pd(g);
  const size_t plane = pd.ph * pd.pw;
  std::vector<ptrdiff_t> a_off(pl.k);
  for (size_t r = 0; r < pl.k; ++r) {
    const size_t c = r / (g.kh * g.kw), i = r / g.kw % g.kh, j = r % g.kw;
    a_off[r] = static_cast<ptrdiff_t>(c * plane + i * g.dh * pd.pw + j * g.dw);
  }
  // row tiles of each output row: balanced widths of at most 14
  const size_t row_tiles = ceil_div(g.ow, kPixelRowsMr);
  using ImplicitFn = void (*)(size_t, size_t, size_t, const float*, const ptrdiff_t*, size_t, const float*, float*,
                              size_t, float, float, const float*);
  constexpr ImplicitFn kKernel = NNKERN_X86_ONLY(gemm::f32_gemm_14x32_implicit_ct_avx512);
  const size_t kc = wt->slice_depth(), n_pad = wt->padded_columns();
  const float* const packed = wt->panels();
  run_tasks(g.n, (plane * pl.cg + 16) * sizeof(float), [&](size_t n, void* scratch) {
    float* const xp = static_cast<float*>(scratch);
    for (size_t c = 0; c < pl.cg; ++c) {
      pad_plane(x + (n * g.c + c) * pl.hw, g.h, g.w, static_cast<ptrdiff_t>(g.pt), static_cast<ptrdiff_t>(g.pl),
                pd.ph, pd.pw, xp + c * plane);
    }
    float* const on = out + n * g.o * pl.p;
    for (size_t pc = 0; pc < pl.k; pc += kc) {
      const size_t kb = std::min(kc, pl.k - pc);
      const float* const b_slice = packed + pc * n_pad;
      const float beta = pc == 0 ? 0.0f : 1.0f;
      const float* const sbias = pc == 0 ? bias : nullptr;
      for (size_t oy = 0; oy < g.oh; ++oy) {
        for (size_t t = 0, ox0 = 0; t < row_tiles; ++t) {
          const size_t rows = g.ow / row_tiles + (t < g.ow % row_tiles ? 1 : 0);
          const float* a_base = xp + oy * g.sh * pd.pw + ox0 * g.sw;
          float* const c = on + oy * g.ow + ox0;
          for (size_t jr = 0; jr < n_pad; jr += kPixelRowsNr) {
            kKernel(rows, kPixelRowsNr, kb, a_base, a_off.data() + pc, g.sw, b_slice + jr * kb, c + jr * pl.p, pl.p,
                    1.0f, beta, sbias != nullptr ? sbias + jr : nullptr);
          }
          ox0 += rows;
        }
      }
    }
    residual_relu(pl, n * pl.p, (n + 1) * pl.p, residual, relu, out);
  });
}

template <class T>
void conv2d_typed(const Plan& pl, const T* x, const T* w, const T* bias, const T* residual, bool relu, T* out) {
  if constexpr (std::is_same_v<T, float>) {
    // Winograd's transforms mix every pixel of a tile (an Inf becomes inf - inf = NaN across
    // it): with a NaN or Inf in the data, the direct path gives the IEEE result instead.
    if (winograd_applies(pl.g) && all_finite(x, input_elements(pl.g))) {
      const auto filters = winograd_filters(pl.g, w);
      if (filters->finite) {
        conv2d_winograd(pl.g, x, *filters, bias, residual, relu, out);
        return;
      }
    }
    if (lanes_applies(pl)) {
      lanes_forward(pl, x, w, bias, residual, relu, out);
      return;
    }
    if (direct_applies(pl)) {
      direct_forward(pl, x, w, bias, residual, relu, out);
      return;
    }
  }
  if (pl.cg == 1 && dw3x3_applies(pl)) {
    dw3x3_forward(pl, x, w, bias, residual, relu, out);
  } else if (pl.cg == 1) {
    dwconv_forward(pl, x, w, bias, residual, relu, out);
  } else if (pixel_rows_form_applies<T>(pl) && (pixel_rows_applies<T>(pl) || pixel_rows_implicit_shape(pl))) {
    // the implicit form when every thread gets an image, else patches packed per tile (the same bits)
    if constexpr (std::is_same_v<T, float>) {
      if (pixel_rows_implicit_applies(pl)) {
        conv2d_pixel_rows_implicit(pl, x, w, bias, residual, relu, out);
      } else {
        conv2d_pixel_rows(pl, x, w, bias, residual, relu, out);
      }
    }
  } else {
    conv2d_gemm(pl, x, w, bias, residual, relu, out);
  }
}

}  // namespace

void conv2d(const ConvGeometry& g, const ArrayView& x, const ArrayView& weight, const ArrayView* bias,
            const ArrayView* residual, bool relu, const ArrayView& out) {
  const Plan pl(g);
  if (x.dtype == Dtype::f32) {
    conv2d_typed(pl, x.as<float>(), weight.as<float>(), data_or_null<float>(bias), data_or_null<float>(residual),
                 relu, out.as<float>());
  } else {
    conv2d_typed(pl, x.as<double>(), weight.as<double>(), data_or_null<double>(bias),
                 data_or_null<double>(residual), relu, out.as<double>());
  }
}

void conv2d_backward(const ConvGeometry& g, const ArrayView& grad_output, const ArrayView& x,
                     const ArrayView& weight, const ArrayView* grad_input, const ArrayView* grad_weight,
                     const ArrayView* grad_bias) {
  const Plan pl(g);
  if (x.dtype == Dtype::f32) {
    conv2d_backward_typed<float>(pl, grad_output, x, weight, grad_input, grad_weight, grad_bias);
  } else {
    conv2d_backward_typed<double>(pl, grad_output, x, weight, grad_input, grad_weight, grad_bias);
  }
}

}  // namespace nnkern::ops
