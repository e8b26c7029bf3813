// sigmoid / tanh on 8 lanes (activation_impl.h over vec_avx2.h): the algorithm
// of the AVX-512 family, same polynomials, with 2^n built in the exponent field
// since AVX2 has no vscalefps.
#include <immintrin.h>

#include "vmath/activation_impl.h"
#include "vmath/vec_avx2.h"

namespace nnkern::vmath {

NNKERN_DEFINE_VACTIVATION(avx2, Avx2)

}  // namespace nnkern::vmath
