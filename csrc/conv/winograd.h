// Winograd F(4x4, 3x3) transforms (Lavin & Gray, points 0, +-1, +-2), the
// micro-kernels of conv/winograd_op.cpp. One 4x4 output tile reads a 6x6 input
// tile d and becomes 36 independent products: Y = A^T [(G g G^T) . (B^T d B)] A.
// Summed over input channels, the 36 products are 36 GEMMs.
//
// Layouts (xi = 6 * row + column of the 6x6 transformed tile):
//  - filter: w holds np 3x3 filters back to back (9 floats each); filter p's
//    transform goes to u[xi * ld + p].
//  - input: rows[0..5] are the six input rows (w floats each) of one row of
//    tiles, null for a row of padding; tile t reads columns x0 + 4t .. x0 +
//    4t + 5, and columns outside [0, w) read as zero (padding). Tile t's
//    transform goes to v[xi * ld + t], t < nt.
//  - output: m[xi * ld + t] holds the 36 products of tile t (t < nt); the
//    4x4 results + bias (+ residual, then ReLU if relu) are written to
//    out[i * ld_row + x] for rows i < nrows and columns x < ow (<= 4 nt);
//    res (same layout as out) may be null.
// Only an AVX-512 family exists: the operator uses Winograd only there.
#pragma once

#include <cstddef>
#include <cstdint>

namespace nnkern::conv {

void f32_wino43_filter_avx512(const float* w, std::size_t np, float* u, std::size_t ld);
void f32_wino43_input_avx512(const float* const* rows, std::ptrdiff_t x0, std::size_t w, std::size_t nt, float* v,
                             std::size_t ld);
void f32_wino43_output_avx512(const float* m, std::size_t ld, std::size_t nt, std::size_t nrows, std::size_t ow,
                              float bias, const float* res, bool relu, float* out, std::size_t ld_row);

// The same transforms for tiles from anywhere (small planes: a row of 7x7's
// tiles fills 2 of 16 lanes), 16 tiles of a TileSet per vector, their inputs
// gathered and their outputs scattered. Tile t < nt of the set:
//  - input: its 6x6 window at base + in_off[t] + r * w + j, for the rows r
//    with bit t % 16 of in_rows[6 * (t / 16) + r] set and the columns j with
//    that bit of in_cols[6 * (t / 16) + j] (zero elsewhere: padding); the
//    transform goes to v[xi * ld + t].
//  - output: its 4x4 results + bias (+ res at the same offsets, then ReLU if
//    relu) go to out + out_off[t] + i * ow + j for the rows i and columns j
//    whose bits are set in out_rows[4 * (t / 16) + i] / out_cols[...].
// Offsets are elements, int32 (the caller checks the tensors' sizes). The
// same arithmetic, in the same order, as the row kernels above: the same bits.
struct TileSet {
  const std::int32_t* in_off;
  const std::uint16_t* in_rows;
  const std::uint16_t* in_cols;
  const std::int32_t* out_off;
  const std::uint16_t* out_rows;
  const std::uint16_t* out_cols;
  std::size_t nt;
};
void f32_wino43_input_gather_avx512(const float* base, const TileSet& tiles, std::size_t w, float* v, std::size_t ld);
void f32_wino43_output_scatter_avx512(const float* m, std::size_t ld, const TileSet& tiles, std::size_t ow, float bias,
                                      const float* res, bool relu, float* out);

}  // namespace nnkern::conv
