// 16 counters per iteration as two 8-lane uint64 vectors; the two 8-bit
// compare masks become 16 bytes of 0/1 in one masked broadcast.
#include <immintrin.h>

#include "vmath/dropout_mask.h"

namespace nnkern::vmath {
namespace {

inline __m512i mix8(__m512i z) {
  z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 30)), _mm512_set1_epi64(kSplitmixM1));
  z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 27)), _mm512_set1_epi64(kSplitmixM2));
  return _mm512_xor_si512(z, _mm512_srli_epi64(z, 31));
}

inline __mmask8 keep8(__m512i z, __m512i threshold) {
  return _mm512_cmpge_epu64_mask(_mm512_srli_epi64(mix8(z), 40), threshold);
}

}  // namespace

void dropout_mask_avx512(std::size_t n, std::uint64_t first, std::uint64_t key, std::uint32_t threshold, bool* keep) {
  const std::uint64_t z0 = key + (first + 1) * kSplitmixPhi;
  const __m512i lane = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0);
  __m512i z = _mm512_add_epi64(_mm512_set1_epi64(z0), _mm512_mullo_epi64(lane, _mm512_set1_epi64(kSplitmixPhi)));
  const __m512i step8 = _mm512_set1_epi64(8 * kSplitmixPhi);
  const __m512i thr = _mm512_set1_epi64(threshold);
  std::size_t j = 0;
  for (; j + 16 <= n; j += 16) {
    const __mmask8 lo = keep8(z, thr);
    z = _mm512_add_epi64(z, step8);
    const __mmask8 hi = keep8(z, thr);
    z = _mm512_add_epi64(z, step8);
    const __mmask16 k = _mm512_kunpackb(_cvtu32_mask16(hi), _cvtu32_mask16(lo));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(keep + j), _mm_maskz_set1_epi8(k, 1));
  }
  for (; j < n; j += 8) {
    const unsigned bits = _cvtmask8_u32(keep8(z, thr));
    z = _mm512_add_epi64(z, step8);
    for (std::size_t l = 0; l < 8 && j + l < n; ++l) keep[j + l] = (bits >> l) & 1u;
  }
}

}  // namespace nnkern::vmath
