// softmax kernels on 16 lanes (softmax_impl.h over vec_avx512.h).
#include <immintrin.h>

#include "vmath/softmax_export.h"
#include "vmath/vec_avx512.h"

namespace nnkern::vmath {

NNKERN_DEFINE_SOFTMAX(avx512, Avx512)

}  // namespace nnkern::vmath
