// The weight gradient of float32 convolutions without im2col (AVX-512
// family, wgrad_taps.h): the patches read in place from zero-padded images.
#include <algorithm>
#include <vector>

#include "conv/conv_plan.h"
#include "conv/wgrad_taps.h"
#include "core/dispatch.h"
#include "core/thread_pool.h"
#include "core/workspace.h"
#include "gemm/gemm_ukernel.h"

namespace nnkern::ops::detail {

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

namespace {

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

}  // namespace

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

}  // namespace nnkern::ops::detail
