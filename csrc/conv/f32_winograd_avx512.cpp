// Winograd F(4x4, 3x3) transforms, 16 tiles (or filters) per vector lane set.
// Two forms of the input and output transforms:
//  - gather / scatter: any 16 tiles (across tile rows and images), each lane's
//    6x6 window gathered with the padding as lane masks, its 4x4 results
//    scattered. The operator's choice for planes up to 128 columns: measured
//    faster than the row form even where that fills its lanes (56x56: -10%),
//    much faster on small planes (7x7: 2 of the row form's 16 lanes used).
//    (Gathers are slow on CPUs with the GDS microcode mitigation; this one,
//    like the machines the targets are set on, is not affected.)
//  - row: 16 neighbouring tiles of one row of tiles, whose columns sit at
//    stride 4 in the image row: 64 contiguous floats are loaded and
//    de-interleaved by a 16x4 transpose in registers (12 shuffles), and the 4
//    output columns interleaved back the same way before contiguous stores.
//    For wider planes, and tensors past the gathers' int32 offsets.
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "conv/winograd.h"

namespace nnkern::conv {
namespace {

using std::size_t;

inline __mmask16 lanes(size_t n) { return n >= 16 ? __mmask16(0xffff) : _cvtu32_mask16((1u << n) - 1u); }

// Transposes the 4x4 grid of 128-bit blocks of x0..x3 (x_k.block q <-> x_q.block k).
inline void transpose_blocks(__m512& x0, __m512& x1, __m512& x2, __m512& x3) {
  const __m512 u0 = _mm512_shuffle_f32x4(x0, x1, 0x44), u1 = _mm512_shuffle_f32x4(x2, x3, 0x44);
  const __m512 u2 = _mm512_shuffle_f32x4(x0, x1, 0xEE), u3 = _mm512_shuffle_f32x4(x2, x3, 0xEE);
  x0 = _mm512_shuffle_f32x4(u0, u1, 0x88);
  x1 = _mm512_shuffle_f32x4(u0, u1, 0xDD);
  x2 = _mm512_shuffle_f32x4(u2, u3, 0x88);
  x3 = _mm512_shuffle_f32x4(u2, u3, 0xDD);
}

// Transposes the 4x4 matrix held by x0..x3 inside each 128-bit block.
inline void transpose_in_blocks(__m512& x0, __m512& x1, __m512& x2, __m512& x3) {
  const __m512 s0 = _mm512_unpacklo_ps(x0, x1), s1 = _mm512_unpackhi_ps(x0, x1);
  const __m512 s2 = _mm512_unpacklo_ps(x2, x3), s3 = _mm512_unpackhi_ps(x2, x3);
  x0 = _mm512_shuffle_ps(s0, s2, 0x44);
  x1 = _mm512_shuffle_ps(s0, s2, 0xEE);
  x2 = _mm512_shuffle_ps(s1, s3, 0x44);
  x3 = _mm512_shuffle_ps(s1, s3, 0xEE);
}

// c[j] (j < 4) = column j of the 16 tiles whose 4 columns start at p[4 t];
// lane l of load i is read only where bit l of mask[i] is set, else zero.
inline void load_columns(const float* p, const __mmask16* mask, __m512* c) {
  c[0] = _mm512_maskz_loadu_ps(mask[0], p);
  c[1] = _mm512_maskz_loadu_ps(mask[1], p + 16);
  c[2] = _mm512_maskz_loadu_ps(mask[2], p + 32);
  c[3] = _mm512_maskz_loadu_ps(mask[3], p + 48);
  transpose_blocks(c[0], c[1], c[2], c[3]);
  transpose_in_blocks(c[0], c[1], c[2], c[3]);
}

// The lanes l of a 16-float load at column x with 0 <= x + l < w.
inline __mmask16 inside(std::ptrdiff_t x, std::ptrdiff_t w) {
  const std::ptrdiff_t lo = x < 0 ? (-x < 16 ? -x : 16) : 0;
  const std::ptrdiff_t hi = w - x < 16 ? (w - x > 0 ? w - x : 0) : 16;
  if (hi <= lo) return 0;
  return _cvtu32_mask16(((1u << hi) - 1u) & ~((1u << lo) - 1u));
}

// v = B^T d for one 6-vector (B^T of F(4x4, 3x3), points 0, +-1, +-2).
inline void input_1d(const __m512* d, __m512* v) {
  const __m512 four = _mm512_set1_ps(4.0f), five = _mm512_set1_ps(5.0f), two = _mm512_set1_ps(2.0f);
  const __m512 t1 = _mm512_fnmadd_ps(four, d[2], d[4]);  // d4 - 4 d2
  const __m512 t2 = _mm512_fnmadd_ps(four, d[1], d[3]);  // d3 - 4 d1
  const __m512 t3 = _mm512_sub_ps(d[4], d[2]);
  const __m512 t4 = _mm512_mul_ps(two, _mm512_sub_ps(d[3], d[1]));
  v[0] = _mm512_fmadd_ps(four, d[0], _mm512_fnmadd_ps(five, d[2], d[4]));
  v[1] = _mm512_add_ps(t1, t2);
  v[2] = _mm512_sub_ps(t1, t2);
  v[3] = _mm512_add_ps(t3, t4);
  v[4] = _mm512_sub_ps(t3, t4);
  v[5] = _mm512_fmadd_ps(four, d[1], _mm512_fnmadd_ps(five, d[3], d[5]));
}

// y = A^T m for one 6-vector.
inline void output_1d(const __m512* m, __m512* y) {
  const __m512 s12 = _mm512_add_ps(m[1], m[2]), d12 = _mm512_sub_ps(m[1], m[2]);
  const __m512 s34 = _mm512_add_ps(m[3], m[4]), d34 = _mm512_sub_ps(m[3], m[4]);
  y[0] = _mm512_add_ps(_mm512_add_ps(m[0], s12), s34);
  y[1] = _mm512_fmadd_ps(_mm512_set1_ps(2.0f), d34, d12);
  y[2] = _mm512_fmadd_ps(_mm512_set1_ps(4.0f), s34, s12);
  y[3] = _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(8.0f), d34, d12), m[5]);
}

// u = G g for one 3-vector.
inline void filter_1d(const __m512* g, __m512* u) {
  const __m512 s = _mm512_add_ps(g[0], g[2]);
  const __m512 q = _mm512_fmadd_ps(_mm512_set1_ps(1.0f / 24), g[0], _mm512_mul_ps(_mm512_set1_ps(1.0f / 6), g[2]));
  const __m512 h = _mm512_mul_ps(_mm512_set1_ps(1.0f / 12), g[1]);
  const __m512 m6 = _mm512_set1_ps(-1.0f / 6);
  u[0] = _mm512_mul_ps(_mm512_set1_ps(0.25f), g[0]);
  u[1] = _mm512_mul_ps(m6, _mm512_add_ps(s, g[1]));
  u[2] = _mm512_mul_ps(m6, _mm512_sub_ps(s, g[1]));
  u[3] = _mm512_add_ps(q, h);
  u[4] = _mm512_sub_ps(q, h);
  u[5] = g[2];
}

// The second pass of the input transform: B^T down each column of r (the
// rows' transforms), the 36 results of 16 tiles stored to v[xi * ld + t0].
inline void input_columns(const __m512 (&r)[6][6], __mmask16 m, float* v, size_t ld, size_t t0) {
  for (int j = 0; j < 6; ++j) {
    const __m512 col[6] = {r[0][j], r[1][j], r[2][j], r[3][j], r[4][j], r[5][j]};
    __m512 out[6];
    input_1d(col, out);
    for (int i = 0; i < 6; ++i) _mm512_mask_storeu_ps(v + (6 * i + j) * ld + t0, m, out[i]);
  }
}

// The first pass of the output transform: A^T down each column of 16 tiles'
// 6x6 products mp[xi * ld + t0], into a[output row][column].
inline void output_columns(const float* mp, size_t ld, size_t t0, __mmask16 m, __m512 (&a)[4][6]) {
  for (int j = 0; j < 6; ++j) {
    __m512 col[6], y[4];
    for (int i = 0; i < 6; ++i) col[i] = _mm512_maskz_loadu_ps(m, mp + (6 * i + j) * ld + t0);
    output_1d(col, y);
    for (int i = 0; i < 4; ++i) a[i][j] = y[i];
  }
}

}  // namespace

void f32_wino43_filter_avx512(const float* w, size_t np, float* u, size_t ld) {
  const __m512i base = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                          _mm512_set1_epi32(9));
  for (size_t p = 0; p < np; p += 16) {
    const __mmask16 m = lanes(np - p);
    const float* src = w + p * 9;
    __m512 g[9];
    for (int k = 0; k < 9; ++k) g[k] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, base, src + k, 4);
    __m512 a[6][3];  // G g: row i, column k
    for (int k = 0; k < 3; ++k) {
      const __m512 col[3] = {g[k], g[3 + k], g[6 + k]};
      __m512 t[6];
      filter_1d(col, t);
      for (int i = 0; i < 6; ++i) a[i][k] = t[i];
    }
    for (int i = 0; i < 6; ++i) {
      __m512 t[6];
      filter_1d(a[i], t);
      for (int j = 0; j < 6; ++j) _mm512_mask_storeu_ps(u + (6 * i + j) * ld + p, m, t[j]);
    }
  }
}

void f32_wino43_input_avx512(const float* const* rows, std::ptrdiff_t x0, std::size_t w, std::size_t nt, float* v,
                             std::size_t ld) {
  const auto sw = static_cast<std::ptrdiff_t>(w);
  for (size_t t0 = 0; t0 < nt; t0 += 16) {
    const __mmask16 m = lanes(nt - t0);
    const std::ptrdiff_t x = x0 + static_cast<std::ptrdiff_t>(4 * t0);
    // loads at columns x + 16 i (columns 0..3 of each tile) and x + 2 + 16 i (columns 2..5)
    __mmask16 lo_mask[4], hi_mask[4];
    for (int i = 0; i < 4; ++i) {
      lo_mask[i] = inside(x + 16 * i, sw);
      hi_mask[i] = inside(x + 2 + 16 * i, sw);
    }
    __m512 r[6][6];  // B^T along each input row: r[row][xi column]
    for (int i = 0; i < 6; ++i) {
      __m512 d[6];
      if (rows[i] == nullptr) {
        for (auto& e : r[i]) e = _mm512_setzero_ps();
        continue;
      }
      // masked lanes are never read: the address may lie outside the row
      const float* p = rows[i] + x;
      __m512 hi[4];
      load_columns(p, lo_mask, d);
      load_columns(p + 2, hi_mask, hi);  // columns 2..5
      d[4] = hi[2];
      d[5] = hi[3];
      input_1d(d, r[i]);
    }
    input_columns(r, m, v, ld, t0);
  }
}

void f32_wino43_output_avx512(const float* mp, size_t ld, size_t nt, size_t nrows, size_t ow, float bias,
                              const float* res, bool relu, float* out, size_t ld_row) {
  const __m512 vbias = _mm512_set1_ps(bias), zero = _mm512_setzero_ps();
  for (size_t t0 = 0; t0 < nt; t0 += 16) {
    const __mmask16 m = lanes(nt - t0);
    __m512 a[4][6];
    output_columns(mp, ld, t0, m, a);
    const size_t x0 = 4 * t0;
    for (size_t i = 0; i < nrows; ++i) {
      __m512 y[4];
      output_1d(a[i], y);
      for (auto& e : y) e = _mm512_add_ps(e, vbias);
      transpose_in_blocks(y[0], y[1], y[2], y[3]);
      transpose_blocks(y[0], y[1], y[2], y[3]);
      for (size_t q = 0; q < 4; ++q) {
        const size_t x = x0 + 16 * q;
        if (x >= ow) break;
        const __mmask16 mq = lanes(ow - x);
        __m512 val = y[q];
        if (res != nullptr) val = _mm512_add_ps(val, _mm512_maskz_loadu_ps(mq, res + i * ld_row + x));
        // max(val, 0) with val second: NaN passes through, as torch.relu
        if (relu) val = _mm512_max_ps(zero, val);
        _mm512_mask_storeu_ps(out + i * ld_row + x, mq, val);
      }
    }
  }
}

void f32_wino43_input_gather_avx512(const float* base, const TileSet& tiles, size_t w, float* v, size_t ld) {
  const auto row = static_cast<std::int32_t>(w);
  for (size_t t0 = 0; t0 < tiles.nt; t0 += 16) {
    const size_t q = t0 / 16;
    const __mmask16 m = lanes(tiles.nt - t0);
    __m512i at = _mm512_maskz_loadu_epi32(m, tiles.in_off + t0);
    __m512 r[6][6];  // B^T along each input row, as in the row kernel
    for (int i = 0; i < 6; ++i, at = _mm512_add_epi32(at, _mm512_set1_epi32(row))) {
      const __mmask16 in_row = _kand_mask16(m, tiles.in_rows[6 * q + i]);
      __m512 d[6];
      for (int j = 0; j < 6; ++j) {
        // lanes outside the mask are not read (their offsets may point outside the input)
        d[j] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), _kand_mask16(in_row, tiles.in_cols[6 * q + j]), at,
                                        base + j, 4);
      }
      input_1d(d, r[i]);
    }
    input_columns(r, m, v, ld, t0);
  }
}

void f32_wino43_output_scatter_avx512(const float* mp, size_t ld, const TileSet& tiles, size_t ow, float bias,
                                      const float* res, bool relu, float* out) {
  const __m512 vbias = _mm512_set1_ps(bias), zero = _mm512_setzero_ps();
  const auto row = static_cast<std::int32_t>(ow);
  for (size_t t0 = 0; t0 < tiles.nt; t0 += 16) {
    const size_t q = t0 / 16;
    const __mmask16 m = lanes(tiles.nt - t0);
    __m512 a[4][6];
    output_columns(mp, ld, t0, m, a);
    __m512i at = _mm512_maskz_loadu_epi32(m, tiles.out_off + t0);
    for (int i = 0; i < 4; ++i, at = _mm512_add_epi32(at, _mm512_set1_epi32(row))) {
      const __mmask16 out_row = _kand_mask16(m, tiles.out_rows[4 * q + i]);
      if (out_row == 0) continue;
      __m512 y[4];
      output_1d(a[i], y);
      for (int j = 0; j < 4; ++j) {
        const __mmask16 mj = _kand_mask16(out_row, tiles.out_cols[4 * q + j]);
        __m512 val = _mm512_add_ps(y[j], vbias);
        if (res != nullptr) val = _mm512_add_ps(val, _mm512_mask_i32gather_ps(zero, mj, at, res + j, 4));
        // max(val, 0) with val second: NaN passes through, as torch.relu
        if (relu) val = _mm512_max_ps(zero, val);
        _mm512_mask_i32scatter_ps(out + j, mj, at, val, 4);
      }
    }
  }
}

}  // namespace nnkern::conv
