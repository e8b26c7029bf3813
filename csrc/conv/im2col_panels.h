// The patches of a convolution written straight into a GEMM's packed A
// panels (the pixel-rows formulation of conv2d: out^T = patches @ W^T, see
// conv_pixel_rows.cpp): pixels are the GEMM's rows, tap rows (weight order:
// channel, kernel row, kernel column) its depth.
//
// Layout (gemm::PreparedB's packed A, tiles tile_pad elements apart): slice
// pc (kb = min(kc, k - pc) tap rows) at dst + pc * tiles * mr + (pc / kc) *
// tiles * tile_pad; row tile t of it at + t * (mr * kb + tile_pad); tap row r,
// pixel i of the tile at + (r - pc) * mr + i. Padding reads as zero.
#pragma once

#include <cstddef>

namespace nnkern::conv {

// Tap row r reads input row oy * sh + row_off of channel plane chan_off
// (elements from the image's start), columns ox * sw + off_x, which lie in
// the plane for ox in [lo_x, hi_x).
struct Im2colTap {
  std::ptrdiff_t row_off, off_x, lo_x, hi_x;
  std::size_t chan_off;
};

// Output pixels [ox0, ox1) of output row oy of the image at image_off
// (elements), at pixel `at` of row tile `tile`.
struct Im2colRun {
  std::size_t image_off, tile, at;
  std::ptrdiff_t iy0;  // oy * sh
  std::ptrdiff_t ox0, ox1;
};

struct Im2colPanels {
  const float* x;
  std::size_t h, w, sw;
  const Im2colTap* taps;  // k of them
  std::size_t k, kc, mr, tiles, tile_pad;
  const Im2colRun* runs;
  std::size_t n_runs;
  float* dst;
  // tap rows per channel (kh * kw), elements per channel plane, and the
  // images the runs read (first, count): their plane `ahead` channels on is
  // fetched when a channel's first tap row starts (0: none)
  std::size_t taps_per_channel, plane, channels, image0, images, image_stride, ahead;
  std::size_t kw;  // taps with the same r % kw read the same columns
};

// Masked 16-lane copies per run (stride 1: one load; stride 2: two loads and
// a permute), tap row by tap row.
void f32_im2col_panels_avx512(const Im2colPanels& job);

}  // namespace nnkern::conv
