// 16 output pixels per vector, all taps accumulated in registers before one
// store. Stride 1 loads contiguous (masked for the row's tail); other strides
// gather lanes x*sw. The kernel rows are few (3..7), so the tap loop stays a
// runtime loop: its weight broadcasts come from L1 and are not the bottleneck
// next to the loads.
#include <immintrin.h>

#include <type_traits>

#include "conv/dwconv.h"

namespace nnkern::conv {
namespace {

inline __mmask16 lanes(std::size_t n) { return n >= 16 ? __mmask16(0xffff) : _cvtu32_mask16((1u << n) - 1u); }

inline __m512 load(const float* p, std::size_t sw, __m512i idx, __mmask16 m) {
  if (sw == 1) return _mm512_maskz_loadu_ps(m, p);
  return _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, p, 4);
}

}  // namespace

void f32_dwconv_row_avx512(std::size_t ow, std::size_t kh, std::size_t kw, std::size_t sw, std::size_t dw,
                           const float* const* rows, const float* w, float init, float* out) {
  const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                         _mm512_set1_epi32(static_cast<int>(sw)));
  for (std::size_t x = 0; x < ow; x += 16) {
    const __mmask16 m = lanes(ow - x);
    __m512 acc = _mm512_set1_ps(init);
    for (std::size_t i = 0; i < kh; ++i) {
      const float* r = rows[i] + x * sw;
      for (std::size_t j = 0; j < kw; ++j) {
        acc = _mm512_fmadd_ps(_mm512_set1_ps(w[i * kw + j]), load(r + j * dw, sw, idx, m), acc);
      }
    }
    _mm512_mask_storeu_ps(out + x, m, acc);
  }
}

namespace {

// R output channels of one input row set, 32 pixels (two vectors) per step:
// each input vector is loaded once for all R channels, and the 2R chains
// hide the FMA latency that bounds the one-channel kernel (one chain per
// vector). Every output is the same FMA chain as f32_dwconv_row_avx512's.
template <int R>
void rows_block(std::size_t ow, std::size_t kh, std::size_t kw, std::size_t sw, std::size_t dw,
                const float* const* rows, const float* w, std::size_t taps, const float* init, float* const* out) {
  const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                         _mm512_set1_epi32(static_cast<int>(sw)));
  for (std::size_t x = 0; x < ow; x += 32) {
    const __mmask16 m0 = lanes(ow - x), m1 = ow - x > 16 ? lanes(ow - x - 16) : __mmask16(0);
    __m512 acc[R][2];
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm512_set1_ps(init[r]);
    for (std::size_t i = 0; i < kh; ++i) {
      const float* row = rows[i] + x * sw;
      for (std::size_t j = 0; j < kw; ++j) {
        const __m512 v0 = load(row + j * dw, sw, idx, m0);
        const __m512 v1 = load(row + 16 * sw + j * dw, sw, idx, m1);
        for (int r = 0; r < R; ++r) {
          const __m512 wv = _mm512_set1_ps(w[r * taps + i * kw + j]);
          acc[r][0] = _mm512_fmadd_ps(wv, v0, acc[r][0]);
          acc[r][1] = _mm512_fmadd_ps(wv, v1, acc[r][1]);
        }
      }
    }
    for (int r = 0; r < R; ++r) {
      _mm512_mask_storeu_ps(out[r] + x, m0, acc[r][0]);
      if (m1 != 0) _mm512_mask_storeu_ps(out[r] + x + 16, m1, acc[r][1]);
    }
  }
}

}  // namespace

void f32_dwconv_rows_avx512(std::size_t ow, std::size_t kh, std::size_t kw, std::size_t sw, std::size_t dw,
                            const float* const* rows, const float* w, std::size_t channels, const float* init,
                            float* const* out) {
  const std::size_t taps = kh * kw;
  // Blocks of up to 8 channels (16 accumulators), the rest in one block:
  // every block runs 2R FMA chains of kh*kw steps, so a small block (LeNet's
  // 6 = 4 + 2) costs as much as a full one, bound by the FMA latency.
  std::size_t o = 0;
  for (; o + 8 <= channels; o += 8) rows_block<8>(ow, kh, kw, sw, dw, rows, w + o * taps, taps, init + o, out + o);
  const auto block = [&](auto r) {
    rows_block<decltype(r)::value>(ow, kh, kw, sw, dw, rows, w + o * taps, taps, init + o, out + o);
  };
  switch (channels - o) {
    case 7: block(std::integral_constant<int, 7>()); break;
    case 6: block(std::integral_constant<int, 6>()); break;
    case 5: block(std::integral_constant<int, 5>()); break;
    case 4: block(std::integral_constant<int, 4>()); break;
    case 3: block(std::integral_constant<int, 3>()); break;
    case 2: block(std::integral_constant<int, 2>()); break;
    case 1: block(std::integral_constant<int, 1>()); break;
    default: break;
  }
}

void f32_dwconv_wgrad_row_avx512(std::size_t ow, std::size_t kh, std::size_t kw, std::size_t sw, std::size_t dw,
                                 const float* const* rows, const float* g, float* acc) {
  const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                         _mm512_set1_epi32(static_cast<int>(sw)));
  for (std::size_t i = 0; i < kh; ++i) {
    for (std::size_t j = 0; j < kw; ++j) {
      const float* r = rows[i] + j * dw;
      __m512 s = _mm512_setzero_ps();
      for (std::size_t x = 0; x < ow; x += 16) {
        const __mmask16 m = lanes(ow - x);
        s = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, g + x), load(r + x * sw, sw, idx, m), s);
      }
      acc[i * kw + j] += _mm512_reduce_add_ps(s);
    }
  }
}

namespace {

// kTaps consecutive taps j0 .. j0 + kTaps - 1 of kernel row i, summed over
// every output row and pixel of the plane in kTaps vector accumulators
// (a compile-time count, so that they stay in registers).
template <std::size_t kTaps, bool kUnit>
void wgrad_taps(const DwWgradPlane& p, const float* pad, const float* g, std::size_t i, std::size_t j0, __m512i idx,
                float* sums) {
  __m512 acc[kTaps];
  for (std::size_t t = 0; t < kTaps; ++t) acc[t] = _mm512_setzero_ps();
  for (std::size_t oy = 0; oy < p.oh; ++oy) {
    const float* row = pad + (oy * p.sh + i * p.dh) * p.pw + j0 * p.dw;
    const float* grow = g + oy * p.ow;
    for (std::size_t x = 0; x < p.ow; x += 16) {
      const __mmask16 m = lanes(p.ow - x);
      const __m512 gv = _mm512_maskz_loadu_ps(m, grow + x);
      const float* r = row + x * p.sw;
      for (std::size_t t = 0; t < kTaps; ++t) {
        const __m512 xv = kUnit ? _mm512_maskz_loadu_ps(m, r + t * p.dw)
                                : _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, r + t * p.dw, 4);
        acc[t] = _mm512_fmadd_ps(gv, xv, acc[t]);
      }
    }
  }
  for (std::size_t t = 0; t < kTaps; ++t) sums[t] += _mm512_reduce_add_ps(acc[t]);
}

template <bool kUnit>
void wgrad_row_of_taps(const DwWgradPlane& p, const float* pad, const float* g, std::size_t i, __m512i idx,
                       float* sums) {
  std::size_t j0 = 0;
  for (; j0 + 8 <= p.kw; j0 += 8) wgrad_taps<8, kUnit>(p, pad, g, i, j0, idx, sums + j0);
  switch (p.kw - j0) {
    case 7: return wgrad_taps<7, kUnit>(p, pad, g, i, j0, idx, sums + j0);
    case 6: return wgrad_taps<6, kUnit>(p, pad, g, i, j0, idx, sums + j0);
    case 5: return wgrad_taps<5, kUnit>(p, pad, g, i, j0, idx, sums + j0);
    case 4: return wgrad_taps<4, kUnit>(p, pad, g, i, j0, idx, sums + j0);
    case 3: return wgrad_taps<3, kUnit>(p, pad, g, i, j0, idx, sums + j0);
    case 2: return wgrad_taps<2, kUnit>(p, pad, g, i, j0, idx, sums + j0);
    case 1: return wgrad_taps<1, kUnit>(p, pad, g, i, j0, idx, sums + j0);
    default: return;
  }
}

}  // namespace

void f32_dwconv_wgrad_plane_avx512(const DwWgradPlane& p, const float* pad, const float* g, float* sums) {
  const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                         _mm512_set1_epi32(static_cast<int>(p.sw)));
  for (std::size_t i = 0; i < p.kh; ++i) {
    if (p.sw == 1) {
      wgrad_row_of_taps<true>(p, pad, g, i, idx, sums + i * p.kw);
    } else {
      wgrad_row_of_taps<false>(p, pad, g, i, idx, sums + i * p.kw);
    }
  }
}

}  // namespace nnkern::conv
