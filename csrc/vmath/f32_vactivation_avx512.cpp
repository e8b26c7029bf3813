// sigmoid / tanh on 16 lanes (activation_impl.h over vec_avx512.h): the exp
// takes 2^n by vscalefps, which also underflows gracefully.
#include <immintrin.h>

#include "vmath/activation_impl.h"
#include "vmath/vec_avx512.h"

namespace nnkern::vmath {

NNKERN_DEFINE_VACTIVATION(avx512, Avx512)

}  // namespace nnkern::vmath
