// softmax kernels on 8 lanes (softmax_impl.h over vec_avx2.h).
#include <immintrin.h>

#include "vmath/softmax_export.h"
#include "vmath/vec_avx2.h"

namespace nnkern::vmath {

NNKERN_DEFINE_SOFTMAX(avx2, Avx2)

}  // namespace nnkern::vmath
