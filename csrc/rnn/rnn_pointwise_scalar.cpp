// The recurrent cells' elementwise passes (rnn_pointwise_impl.h) compiled for the scalar family.
#include "rnn/rnn_pointwise_impl.h"

namespace nnkern::rnn {

NNKERN_DEFINE_RNN_POINTWISE(scalar)

}  // namespace nnkern::rnn
