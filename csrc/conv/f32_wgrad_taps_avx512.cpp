// The taps x 32 weight-gradient kernel (wgrad_taps.h), AVX-512 float32: ROWS
// taps x 2 zmm of output channels, per pixel 2 aligned loads of B and ROWS
// broadcasts of the padded input feed 2 * ROWS FMAs (3x3: 11 loads for 18).
#include <immintrin.h>

#include <array>
#include <cstddef>
#include <utility>

#include "conv/wgrad_taps.h"

namespace nnkern::conv {
namespace {

using std::size_t;

template <int ROWS, int SX>
void taps_tile(size_t nr, const float* xpad, const std::ptrdiff_t* a_row, size_t row_step, size_t y0, size_t y1,
               size_t ow, const float* b, float* c, size_t ldc, float beta) {
  std::ptrdiff_t off[ROWS];
  _Pragma("GCC unroll 16") for (int t = 0; t < ROWS; ++t) off[t] = a_row[t];
  __m512 acc[ROWS][2];
  _Pragma("GCC unroll 16") for (int t = 0; t < ROWS; ++t) acc[t][0] = acc[t][1] = _mm512_setzero_ps();
  for (size_t y = y0; y < y1; ++y) {
    const float* const row = xpad + y * row_step;
    _Pragma("GCC unroll 2") for (size_t x = 0; x < ow; ++x, b += 32) {
      const __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
      _Pragma("GCC unroll 16") for (int t = 0; t < ROWS; ++t) {
        const __m512 a = _mm512_set1_ps(row[static_cast<std::ptrdiff_t>(x * SX) + off[t]]);
        acc[t][0] = _mm512_fmadd_ps(a, b0, acc[t][0]);
        acc[t][1] = _mm512_fmadd_ps(a, b1, acc[t][1]);
      }
    }
  }
  const __mmask16 m0 = nr >= 16 ? __mmask16(0xffff) : _cvtu32_mask16((1u << nr) - 1u);
  const __mmask16 m1 = nr >= 32 ? __mmask16(0xffff) : nr <= 16 ? __mmask16(0) : _cvtu32_mask16((1u << (nr - 16)) - 1u);
  _Pragma("GCC unroll 16") for (int t = 0; t < ROWS; ++t) {
    float* const out = c + static_cast<size_t>(t) * ldc;
    __m512 v0 = acc[t][0], v1 = acc[t][1];
    if (beta != 0.0f) {
      v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, out));
      v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, out + 16));
    }
    _mm512_mask_storeu_ps(out, m0, v0);
    _mm512_mask_storeu_ps(out + 16, m1, v1);
  }
}

using TapsFn = void (*)(size_t, const float*, const std::ptrdiff_t*, size_t, size_t, size_t, size_t, const float*,
                        float*, size_t, float);

template <int SX, int... R>
constexpr std::array<TapsFn, sizeof...(R)> taps_table(std::integer_sequence<int, R...>) {
  return {&taps_tile<R + 1, SX>...};
}
constexpr int kMaxRows = static_cast<int>(kWgradTapsMaxRows);
constexpr auto kTaps1 = taps_table<1>(std::make_integer_sequence<int, kMaxRows>());
constexpr auto kTaps2 = taps_table<2>(std::make_integer_sequence<int, kMaxRows>());

}  // namespace

void f32_wgrad_taps_avx512(size_t rows, size_t nr, const float* xpad, const std::ptrdiff_t* a_row, size_t row_step,
                           size_t sx, size_t y0, size_t y1, size_t ow, const float* b, float* c, size_t ldc,
                           float beta) {
  (sx == 1 ? kTaps1 : kTaps2)[rows - 1](nr, xpad, a_row, row_step, y0, y1, ow, b, c, ldc, beta);
}

}  // namespace nnkern::conv
