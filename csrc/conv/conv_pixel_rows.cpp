// The pixel-rows GEMM (float32, AVX-512 family): out^T = patches x W^T, the
// patches written into packed A panels per tile (conv2d_pixel_rows) or read in
// place from a zero-padded image through a table of tap offsets
// (conv2d_pixel_rows_implicit, the same bits).
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "conv/conv_plan.h"
#include "conv/im2col_panels.h"
#include "core/dispatch.h"
#include "core/thread_pool.h"
#include "gemm/gemm.h"
#include "gemm/gemm_ukernel.h"

namespace nnkern::ops::detail {

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

// im2col_panels fetches the input planes this many channels ahead (measured on
// C4 at one thread: 2 ~2-4% faster than none, bench/notes_conv_session6.md).
constexpr size_t kIm2colAhead = 2;

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

namespace {

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

}  // namespace

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

template bool pixel_rows_form_applies<float>(const Plan&);
template bool pixel_rows_form_applies<double>(const Plan&);
template bool pixel_rows_applies<float>(const Plan&);
template bool pixel_rows_applies<double>(const Plan&);

}  // namespace nnkern::ops::detail
