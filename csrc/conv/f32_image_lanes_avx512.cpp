// Image-lanes convolution kernels (image_lanes.h), AVX-512 float32.
//
// Register tile of the conv: OB output channels x RB consecutive pixels of a
// row: per tap RB aligned loads and OB weight broadcasts feed OB * RB FMAs
// (6 x 4: 10 loads for 24 FMAs).
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstring>
#include <utility>

#include "conv/blocks.h"
#include "conv/image_lanes.h"
#include "gemm/transpose16_avx512.h"

namespace nnkern::conv {
namespace {

using std::size_t;

inline __mmask16 lanes(size_t n) { return n >= 16 ? __mmask16(0xffff) : _cvtu32_mask16((1u << n) - 1u); }

constexpr int kMaxOB = 6, kMaxRB = 4;       // conv tile bounds

template <int OB, int RB>
void conv_tile(const LanesConv& p, size_t o0, size_t y, size_t x0, float* dst) {
  const size_t taps = p.kh * p.kw, ws = p.c * taps;
  __m512 acc[OB][RB];
  _Pragma("GCC unroll 8") for (int ob = 0; ob < OB; ++ob) {
    const __m512 b = _mm512_set1_ps(p.bias != nullptr ? p.bias[o0 + static_cast<size_t>(ob)] : 0.0f);
    _Pragma("GCC unroll 8") for (int r = 0; r < RB; ++r) acc[ob][r] = b;
  }
  const float* const wo = p.w + o0 * ws;
  const size_t step = p.dw * 16;
  // the kernel rows whose input row y + i * dh holds data
  const size_t i_lo = p.row_lo > y ? (p.row_lo - y + p.dh - 1) / p.dh : 0;
  const size_t i_hi = p.row_hi > y ? std::min(p.kh, (p.row_hi - y + p.dh - 1) / p.dh) : 0;
  for (size_t c = 0; c < p.c; ++c) {
    for (size_t i = i_lo; i < i_hi; ++i) {
      const float* src = p.src + ((c * p.rows + y + i * p.dh) * p.pitch + x0) * 16;
      const float* const wi = wo + c * taps + i * p.kw;
      for (size_t j = 0; j < p.kw; ++j, src += step) {
        __m512 v[RB];
        _Pragma("GCC unroll 8") for (int r = 0; r < RB; ++r) v[r] = _mm512_load_ps(src + r * 16);
        _Pragma("GCC unroll 8") for (int ob = 0; ob < OB; ++ob) {
          const __m512 wv = _mm512_set1_ps(wi[static_cast<size_t>(ob) * ws + j]);
          _Pragma("GCC unroll 8") for (int r = 0; r < RB; ++r) acc[ob][r] = _mm512_fmadd_ps(wv, v[r], acc[ob][r]);
        }
      }
    }
  }
  _Pragma("GCC unroll 8") for (int ob = 0; ob < OB; ++ob) {
    float* const out = dst + (((o0 + static_cast<size_t>(ob)) * p.oh + y) * p.ow + x0) * 16;
    _Pragma("GCC unroll 8") for (int r = 0; r < RB; ++r) _mm512_store_ps(out + r * 16, acc[ob][r]);
  }
}

using ConvTileFn = void (*)(const LanesConv&, size_t, size_t, size_t, float*);

template <int OB, int... R>
constexpr std::array<ConvTileFn, sizeof...(R)> conv_row(std::integer_sequence<int, R...>) {
  return {&conv_tile<OB, R + 1>...};
}
template <int... O>
constexpr std::array<std::array<ConvTileFn, kMaxRB>, sizeof...(O)> conv_table(std::integer_sequence<int, O...>) {
  return {conv_row<O + 1>(std::make_integer_sequence<int, kMaxRB>())...};
}
// [OB - 1][RB - 1]
constexpr auto kConvTiles = conv_table(std::make_integer_sequence<int, kMaxOB>());

}  // namespace

void f32_to_lanes_avx512(const float* x, size_t count, size_t image_stride, size_t c, size_t h, size_t w, size_t top,
                         size_t left, size_t rows, size_t pitch, float* dst) {
  const size_t hh = top < rows ? std::min(h, rows - top) : 0, ww = left < pitch ? std::min(w, pitch - left) : 0;
  for (size_t ch = 0; ch < c; ++ch) {
    float* const plane = dst + ch * rows * pitch * 16;
    // the border: rows above and below the image, then the columns beside it
    std::memset(plane, 0, top * pitch * 16 * sizeof(float));
    std::memset(plane + (top + hh) * pitch * 16, 0, (rows - top - hh) * pitch * 16 * sizeof(float));
    for (size_t y = 0; y < hh; ++y) {
      float* const row = plane + (top + y) * pitch * 16;
      std::memset(row, 0, left * 16 * sizeof(float));
      std::memset(row + (left + ww) * 16, 0, (pitch - left - ww) * 16 * sizeof(float));
      const float* const src = x + (ch * h + y) * w;
      for (size_t x0 = 0; x0 < ww; x0 += 16) {
        const size_t valid = std::min<size_t>(16, ww - x0);
        const __mmask16 m = lanes(valid);
        __m512 r[16];
        for (size_t l = 0; l < 16; ++l) {
          r[l] = l < count ? _mm512_maskz_loadu_ps(m, src + l * image_stride + x0) : _mm512_setzero_ps();
        }
        transpose16x16(r);
        for (size_t q = 0; q < valid; ++q) _mm512_store_ps(row + (left + x0 + q) * 16, r[q]);
      }
    }
  }
}

void f32_from_lanes_avx512(const float* src, size_t o0, size_t o1, size_t plane, size_t count, size_t image_stride,
                           const float* residual, bool relu, float* out) {
  const __m512 zero = _mm512_setzero_ps();
  for (size_t o = o0; o < o1; ++o) {
    for (size_t q0 = 0; q0 < plane; q0 += 16) {
      const size_t valid = std::min<size_t>(16, plane - q0);
      const __mmask16 m = lanes(valid);
      const float* const s = src + (o * plane + q0) * 16;
      __m512 r[16];
      for (size_t q = 0; q < 16; ++q) r[q] = q < valid ? _mm512_load_ps(s + q * 16) : zero;
      transpose16x16(r);
      for (size_t l = 0; l < count; ++l) {
        const size_t at = l * image_stride + o * plane + q0;
        __m512 v = r[l];
        if (residual != nullptr) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, residual + at));
        // max(0, v) returns v when v is NaN (the second operand): NaN passes, as torch.relu
        if (relu) v = _mm512_max_ps(zero, v);
        _mm512_mask_storeu_ps(out + at, m, v);
      }
    }
  }
}

void f32_conv_lanes_avx512(const LanesConv& p, size_t o0, size_t o1, float* dst) {
  const Blocks ob(o1 - o0, kMaxOB);
  for (size_t b = 0; b < ob.parts; ++b) {
    const size_t c0 = o0 + ob.start(b), nb = ob.start(b + 1) - ob.start(b);
    for (size_t y = 0; y < p.oh; ++y) {
      for (size_t x0 = 0; x0 < p.ow; x0 += kMaxRB) {
        const size_t rb = std::min<size_t>(kMaxRB, p.ow - x0);
        kConvTiles[nb - 1][rb - 1](p, c0, y, x0, dst);
      }
    }
  }
}

void f32_sum_lanes_avx512(const float* acc, size_t count, float* out) {
  size_t e = 0;
  for (; e + 16 <= count; e += 16) {
    __m512 r[16];
    for (size_t q = 0; q < 16; ++q) r[q] = _mm512_loadu_ps(acc + (e + q) * 16);
    transpose16x16(r);  // r[l]: lane l of the 16 elements
    __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
    for (size_t l = 0; l < 16; ++l) {
      lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(r[l])));
      hi = _mm512_add_pd(hi, _mm512_cvtps_pd(_mm512_extractf32x8_ps(r[l], 1)));
    }
    _mm256_storeu_ps(out + e, _mm512_cvtpd_ps(lo));
    _mm256_storeu_ps(out + e + 8, _mm512_cvtpd_ps(hi));
  }
  for (; e < count; ++e) {
    double s = 0;
    for (size_t l = 0; l < 16; ++l) s += static_cast<double>(acc[e * 16 + l]);
    out[e] = static_cast<float>(s);
  }
}

}  // namespace nnkern::conv
