// exp on 8 float lanes (the algorithm of exp_coeffs.h), 2^n built in the
// exponent field since AVX2 has no vscalefps. For AVX2 files only; helpers in
// an anonymous namespace (see CMakeLists.txt).
#pragma once

#include <immintrin.h>

#include "vmath/exp_coeffs.h"

namespace nnkern::vmath {
namespace {

// a in [ln(FLT_MIN), 88] (callers clamp): n in [-126, 127], so 2^n is a normal float
// built directly in the exponent field. NaN propagates through r. At n = -127
// (a in [-88, -87.68]) the field is 0 and the result an exact 0.
inline __m256 exp8(__m256 a) {
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(a, _mm256_set1_ps(kLog2e)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), a);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), r);
  __m256 q = _mm256_fmadd_ps(_mm256_set1_ps(kExpQ4), r, _mm256_set1_ps(kExpQ3));
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(kExpQ2));
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(kExpQ1));
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(kExpQ0));
  const __m256 p = _mm256_add_ps(_mm256_fmadd_ps(q, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
  const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
}

}  // namespace
}  // namespace nnkern::vmath
