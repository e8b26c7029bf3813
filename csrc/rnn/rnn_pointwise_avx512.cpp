// The recurrent cells' elementwise passes (rnn_pointwise_impl.h) compiled for the avx512 family.
#include "rnn/rnn_pointwise_impl.h"

namespace nnkern::rnn {

NNKERN_DEFINE_RNN_POINTWISE(avx512)

}  // namespace nnkern::rnn
