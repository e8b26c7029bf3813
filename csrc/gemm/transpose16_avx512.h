// 16 x 16 float transpose in AVX-512 registers, for files compiled for the
// AVX-512 family (the GEMM's transposed stores and packing, the image-lanes
// convolutions' layout changes).
#pragma once

#include <immintrin.h>

namespace nnkern {

// Transposes 16 rows of 16 floats in registers: three rounds of shuffles
// (pairs of elements, quads within 128-bit lanes, then 128-bit lanes).
inline void transpose16x16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xee);
    r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xee);
  }
  // r[4 i + q], 128-bit lane l: rows 4i..4i+3 at column 4l + q.
  for (int q = 0; q < 4; ++q) {
    const __m512 u0 = _mm512_shuffle_f32x4(r[q], r[4 + q], 0x44);
    const __m512 u1 = _mm512_shuffle_f32x4(r[q], r[4 + q], 0xee);
    const __m512 u2 = _mm512_shuffle_f32x4(r[8 + q], r[12 + q], 0x44);
    const __m512 u3 = _mm512_shuffle_f32x4(r[8 + q], r[12 + q], 0xee);
    t[q] = _mm512_shuffle_f32x4(u0, u2, 0x88);
    t[4 + q] = _mm512_shuffle_f32x4(u0, u2, 0xdd);
    t[8 + q] = _mm512_shuffle_f32x4(u1, u3, 0x88);
    t[12 + q] = _mm512_shuffle_f32x4(u1, u3, 0xdd);
  }
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}

}  // namespace nnkern
