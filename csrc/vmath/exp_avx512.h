// exp on 16 float lanes (the algorithm of exp_coeffs.h), 2^n by vscalefps,
// which also underflows gracefully. For AVX-512 files only; helpers in an
// anonymous namespace (see CMakeLists.txt).
#pragma once

#include <immintrin.h>

#include "vmath/exp_coeffs.h"

namespace nnkern::vmath {
namespace {

// a in [-100, 88] (callers clamp; NaN propagates).
inline __m512 exp16(__m512 a) {
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(a, _mm512_set1_ps(kLog2e)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Hi), a);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Lo), r);
  __m512 q = _mm512_fmadd_ps(_mm512_set1_ps(kExpQ4), r, _mm512_set1_ps(kExpQ3));
  q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(kExpQ2));
  q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(kExpQ1));
  q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(kExpQ0));
  const __m512 p = _mm512_add_ps(_mm512_fmadd_ps(q, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

}  // namespace
}  // namespace nnkern::vmath
