// Horizontal sums of four 16-float vectors at once, for files compiled for
// the AVX-512 family (the global average pool, the GEMM's dot kernel).
#pragma once

#include <immintrin.h>

namespace nnkern {

// Lane j of the result: the sum of v<j>'s 16 lanes, added in the pairing of
// _mm512_reduce_add_ps -- (l, l+8), (l, l+4), (l, l+2), (l, l+1) -- so each
// sum has the bits of that vector reduced alone. The four reductions share
// their shuffles (one vector alone takes as many).
inline __m128 hsum4(__m512 v0, __m512 v1, __m512 v2, __m512 v3) {
  // lanes 0-7: v0's (l, l+8) sums, 8-15: v1's; b likewise for v2, v3
  const __m512 a = _mm512_add_ps(_mm512_shuffle_f32x4(v0, v1, 0x44), _mm512_shuffle_f32x4(v0, v1, 0xEE));
  const __m512 b = _mm512_add_ps(_mm512_shuffle_f32x4(v2, v3, 0x44), _mm512_shuffle_f32x4(v2, v3, 0xEE));
  // 128-bit block j: v<j>'s (l, l+4) sums
  const __m512 c = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x88), _mm512_shuffle_f32x4(a, b, 0xDD));
  const __m512 d = _mm512_add_ps(c, _mm512_permute_ps(c, 0x4E));  // (l, l+2)
  const __m512 e = _mm512_add_ps(d, _mm512_movehdup_ps(d));       // (l, l+1): lane 4j holds v<j>'s sum
  return _mm512_castps512_ps128(
      _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), e));
}

}  // namespace nnkern
